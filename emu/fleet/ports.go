package fleet

import (
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// portAllocator hands out free TCP ports for the devices' HTTP servers when
// the user asked for "any port". Letting the kernel choose (port 0) works
// for a few thousand listeners, but the kernel searches the ephemeral range
// for a free port on every bind, and past ~7,000 listeners a bind takes
// milliseconds (17 s for 10,000 here). Walking a range outside the
// ephemeral one instead costs one bind per port; ports taken by anyone else
// (another shard on the same host) are skipped.
type portAllocator struct {
	host   string
	mu     sync.Mutex
	ranges [][2]int // inclusive, in order
	next   int      // next candidate in ranges[0]
}

// autoPortBase is where the search starts: above the ports people pick by
// hand for single devices (8080, 1883, 18xxx).
const autoPortBase = 20000

func newPortAllocator(host string) *portAllocator {
	lo, hi := ephemeralRange()
	var ranges [][2]int
	if lo > autoPortBase {
		ranges = append(ranges, [2]int{autoPortBase, lo - 1})
	}
	if hi < 65535 {
		ranges = append(ranges, [2]int{max(hi+1, autoPortBase), 65535})
	}
	p := &portAllocator{host: host, ranges: ranges}
	if len(ranges) > 0 {
		p.next = ranges[0][0]
	}
	return p
}

// ephemeralRange reads the kernel's range for outgoing connections.
func ephemeralRange() (lo, hi int) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768, 60999 // Linux default
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 32768, 60999
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || lo > hi {
		return 32768, 60999
	}
	return lo, hi
}

// take returns a port that was free a moment ago, or 0 (let the kernel
// choose) once the ranges are exhausted.
func (p *portAllocator) take() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.ranges) > 0 {
		if p.next > p.ranges[0][1] {
			p.ranges = p.ranges[1:]
			if len(p.ranges) > 0 {
				p.next = p.ranges[0][0]
			}
			continue
		}
		port := p.next
		p.next++
		l, err := net.Listen("tcp", net.JoinHostPort(p.host, strconv.Itoa(port)))
		if err != nil {
			continue
		}
		l.Close()
		return port
	}
	return 0
}

// addrInUse reports whether err is a bind to a port someone else holds.
func addrInUse(err error) bool { return errors.Is(err, syscall.EADDRINUSE) }
