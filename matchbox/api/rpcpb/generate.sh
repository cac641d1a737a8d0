#!/bin/sh
# Regenerates the Go code from the .proto files (run from anywhere):
#   go build -o /tmp/bin/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
#   GOBIN=/tmp/bin GOFLAGS=-mod=mod go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
#   PATH=/tmp/bin:$PATH matchbox/api/rpcpb/generate.sh
# Needs protoc (Debian: protobuf-compiler).
set -eu
cd "$(dirname "$0")/../../.."
protoc --proto_path=. \
  --go_out=. --go_opt=module=github.com/kindlingboot/kindling \
  --go-grpc_out=. --go-grpc_opt=module=github.com/kindlingboot/kindling \
  matchbox/api/rpcpb/storage.proto matchbox/api/rpcpb/messages.proto matchbox/api/rpcpb/rpc.proto
