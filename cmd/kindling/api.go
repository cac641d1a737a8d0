package main

import (
	"context"
	"io"
)

// apiCmd runs `kindling group|profile|ignition|generic …` against a remote server.
func apiCmd(ctx context.Context, kind string, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	return usageError{"kindling " + kind + ": not built yet"}
}
