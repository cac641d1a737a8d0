// Package rpcpb is the Go code of Kindling's matchbox-compatible gRPC
// API, generated from the .proto files beside it: the proto packages
// storagepb, serverpb and rpcpb of matchbox v0.11.0, with the same
// messages, field numbers, services and methods, so matchbox's Go client
// and terraform-provider-matchbox talk to Kindling unchanged. Kindling's
// own definitions, not matchbox's generated code: a binary must not link
// both (the protobuf registry refuses two definitions of one full name).
//
// Regenerate with generate.sh (protoc, protoc-gen-go from
// google.golang.org/protobuf v1.36.12, protoc-gen-go-grpc v1.6.2).
package rpcpb

//go:generate ./generate.sh
