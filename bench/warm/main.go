// Command warm requests one endpoint once for every MAC in a list, with a
// few concurrent connections, and reports how long the pass took. load.sh
// uses it to do every machine's first /ignition render (a cache miss)
// before measuring the cached path, and to check that every machine gets
// a 200.
//
//	go run ./bench/warm -url http://127.0.0.1:18080/ignition -macs bench/out/data/macs.txt
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:18080/ignition", "endpoint; ?mac=MAC is appended")
	macFile := flag.String("macs", "bench/out/data/macs.txt", "MAC list, one per line")
	conc := flag.Int("c", 32, "concurrent requests")
	want := flag.String("want", "", "substring every response body must contain (empty: any)")
	flag.Parse()
	if err := run(*url, *macFile, *conc, *want); err != nil {
		fmt.Fprintln(os.Stderr, "warm:", err)
		os.Exit(1)
	}
}

func run(url, macFile string, conc int, want string) error {
	f, err := os.Open(macFile)
	if err != nil {
		return err
	}
	var macs []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := strings.TrimSpace(sc.Text()); m != "" {
			macs = append(macs, m)
		}
	}
	f.Close()
	if err := sc.Err(); err != nil {
		return err
	}
	client := &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: conc, DisableCompression: true},
	}
	var (
		next     atomic.Int64
		failures atomic.Int64
		firstErr sync.Once
		errMsg   string
		wg       sync.WaitGroup
	)
	lat := make([]time.Duration, len(macs))
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(macs) {
					return
				}
				t := time.Now()
				err := get(client, url+"?mac="+macs[i], want)
				lat[i] = time.Since(t)
				if err != nil {
					failures.Add(1)
					firstErr.Do(func() { errMsg = fmt.Sprintf("%s: %v", macs[i], err) })
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))].Round(time.Microsecond) }
	fmt.Printf("warm: %d requests to %s in %s (%.0f req/s, c=%d), latency p50 %s p99 %s max %s, failures %d\n",
		len(macs), url, took.Round(time.Millisecond), float64(len(macs))/took.Seconds(), conc,
		p(0.5), p(0.99), p(1), failures.Load())
	if n := failures.Load(); n > 0 {
		return fmt.Errorf("%d of %d requests failed, first: %s", n, len(macs), errMsg)
	}
	return nil
}

func get(c *http.Client, url, want string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	if want != "" && !strings.Contains(string(body), want) {
		return fmt.Errorf("body lacks %q", want)
	}
	return nil
}
