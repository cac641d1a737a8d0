package main

import (
	"context"
	"io"
)

// labCmd runs `kindling lab up|status|down`.
func labCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return usageError{"kindling lab: not built yet"}
}
