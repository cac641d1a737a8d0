package main

import "io"

// certsCmd runs `kindling certs init`.
func certsCmd(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return usageError{"kindling certs: not built yet"}
}
