//go:build !linux

// Command quictun-bench measures quictun against TCP and its peers on emulated
// links. It needs Linux: network namespaces, TUN devices and tc.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "quictun-bench needs Linux (network namespaces, TUN devices, tc)")
	os.Exit(2)
}
