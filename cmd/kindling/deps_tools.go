//go:build tools

package main

// Packages that the code under construction and its tests use but that are
// not yet imported by a compiled file. This never-compiled file keeps their
// go.sum entries through `go mod tidy`, so builds on a fresh clone work.
import (
	_ "github.com/hashicorp/terraform-plugin-framework/diag"
	_ "github.com/hashicorp/terraform-plugin-framework/path"
	_ "github.com/hashicorp/terraform-plugin-framework/provider"
	_ "github.com/hashicorp/terraform-plugin-framework/provider/schema"
	_ "github.com/hashicorp/terraform-plugin-framework/providerserver"
	_ "github.com/hashicorp/terraform-plugin-framework/resource"
	_ "github.com/hashicorp/terraform-plugin-framework/resource/schema"
	_ "github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	_ "github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	_ "github.com/hashicorp/terraform-plugin-framework/types"
	_ "github.com/hashicorp/terraform-plugin-framework/types/basetypes"
	_ "github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	_ "github.com/klauspost/compress/zstd"
	_ "github.com/poseidon/matchbox/matchbox/client"
	_ "github.com/poseidon/matchbox/matchbox/server/serverpb"
	_ "github.com/poseidon/matchbox/matchbox/storage/storagepb"
	_ "github.com/ulikunitz/xz"
	_ "google.golang.org/grpc/credentials"
	_ "google.golang.org/grpc/status"
	_ "google.golang.org/protobuf/proto"
)
