// Command hello is a small static program the initramfs tests use as
// /init and run in a chroot of an extracted initramfs.
package main

import "fmt"

func main() { fmt.Println("hello from the initramfs") }
