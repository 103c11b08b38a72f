// Command unprivclient is the unprivileged caller of
// TestUnprivilegedCallersAgainstTheEngine: run as uid 65534, it makes N
// concurrent calls on io.otad.Update1 mixing paths it names and files it
// opens with its own rights, and prints each distinct answer with a count.
package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync"
	"syscall"

	"github.com/otadev/otad/internal/dbusapi"
)

func main() {
	if len(os.Args) != 7 {
		fmt.Println("usage: unprivclient ADDR N SECRET FIFO JUNK BUNDLE")
		os.Exit(2)
	}
	addr, secret, fifo, junk, bundle := os.Args[1], os.Args[3], os.Args[4], os.Args[5], os.Args[6]
	n, _ := strconv.Atoi(os.Args[2])
	ctx := context.Background()
	var clients []*dbusapi.Client
	for i := 0; i < 4; i++ { // the bus allows 128 pending calls per connection
		c, err := dbusapi.Dial(ctx, addr)
		if err != nil {
			fmt.Println("dial:", err)
			os.Exit(1)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	open := func(p string) *os.File {
		f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			fmt.Println("open:", err)
			os.Exit(1)
		}
		return f
	}
	fifoF, junkF, bundleF := open(fifo), open(junk), open(bundle)
	kinds := []func(c *dbusapi.Client) (string, error){
		func(c *dbusapi.Client) (string, error) { _, err := c.Inspect(ctx, secret); return "", err },
		func(c *dbusapi.Client) (string, error) { _, err := c.Inspect(ctx, fifo); return "", err },
		func(c *dbusapi.Client) (string, error) { _, err := c.InspectFile(ctx, fifoF); return "", err },
		func(c *dbusapi.Client) (string, error) { _, err := c.InspectFile(ctx, junkF); return "", err },
		func(c *dbusapi.Client) (string, error) {
			m, err := c.InspectFile(ctx, bundleF)
			if err != nil {
				return "", err
			}
			return fmt.Sprint("version ", m["version"].Value()), nil
		},
		func(c *dbusapi.Client) (string, error) {
			_, _, _, err := c.Install(ctx, bundleF, nil, nil)
			return "", err
		},
	}
	var mu sync.Mutex
	answers := map[string]int{}
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			out, err := kinds[i%len(kinds)](clients[i%len(clients)])
			if err != nil {
				out = err.Error()
			}
			mu.Lock()
			answers[out]++
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	keys := make([]string, 0, len(answers))
	for k := range answers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Printf("%d× %s\n", answers[k], k)
	}
}
