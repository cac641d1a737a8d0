// Command gendata writes a benchmark data directory: one group per
// machine, each selecting one MAC, with the default example's profiles,
// Ignition templates and generic files, a MAC list for wrk, and a big
// asset.
//
//	go run ./bench/gendata -n 10000 -o bench/out/data
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/kindlingboot/kindling/bench"
)

func main() {
	n := flag.Int("n", 10_000, "number of machines (one group each)")
	out := flag.String("o", "bench/out/data", "data directory to write (catalog subdirectories are replaced)")
	macs := flag.String("macs", "", "MAC list file, one MAC per line (empty: DIR/macs.txt)")
	assetMiB := flag.Int64("asset-mib", 100, "size of assets/big.img in MiB (0: none)")
	flag.Parse()
	start := time.Now()
	ms, err := bench.Generate(*out, bench.Options{Machines: *n, AssetBytes: *assetMiB << 20, MACFile: *macs})
	if err != nil {
		fmt.Fprintln(os.Stderr, "gendata:", err)
		os.Exit(1)
	}
	fmt.Printf("gendata: %d machines in %s (took %s)\n", len(ms), *out, time.Since(start).Round(time.Millisecond))
}
