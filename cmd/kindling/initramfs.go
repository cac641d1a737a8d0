package main

import (
	"context"
	"io"
)

// initramfsCmd runs `kindling initramfs build`.
func initramfsCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return usageError{"kindling initramfs: not built yet"}
}
