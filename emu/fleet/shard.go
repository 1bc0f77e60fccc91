package fleet

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Shard is one process's part of a fleet of Total devices split over N
// processes: shard I (0-based, as a StatefulSet pod ordinal) runs devices
// First..First+Count-1.
type Shard struct {
	I, N         int
	First, Count int
}

// ParseShard parses "i/n" for a fleet of total devices.
func ParseShard(s string, total int) (Shard, error) {
	is, ns, ok := strings.Cut(s, "/")
	i, err1 := strconv.Atoi(strings.TrimSpace(is))
	n, err2 := strconv.Atoi(strings.TrimSpace(ns))
	switch {
	case !ok || err1 != nil || err2 != nil:
		return Shard{}, fmt.Errorf("fleet: --shard %q: want i/n, e.g. 0/4", s)
	case n < 1 || i < 0 || i >= n:
		return Shard{}, fmt.Errorf("fleet: --shard %q: need 0 <= i < n", s)
	case total < n:
		return Shard{}, fmt.Errorf("fleet: --shard %q: %d devices cannot make %d shards", s, total, n)
	}
	lo, hi := i*total/n, (i+1)*total/n
	return Shard{I: i, N: n, First: lo + 1, Count: hi - lo}, nil
}

func (s Shard) String() string { return fmt.Sprintf("%d/%d", s.I, s.N) }

// FDsPerDevice estimates the descriptors one device holds: its HTTP
// listener, a TCP connection to an external broker, a pty pair, plus the
// flash image while it is being written (boot, then now and then).
func FDsPerDevice(o Options) float64 {
	n := 1.1 // listener + a share of flash images open at any time
	if o.BrokerAddr != "" {
		n++
	}
	if o.Serial {
		n += 2
	}
	return n
}

// fdReserve is what the process needs besides its devices: the runtime,
// the broker's listener, the metrics server, clients of the broker.
const fdReserve = 64

// FDLimit is the outcome of RaiseFDLimit.
type FDLimit struct {
	Soft, Hard uint64 // after raising
	Need       uint64 // estimate for the fleet
	Enough     bool
}

// RaiseFDLimit raises the soft RLIMIT_NOFILE to the hard limit and says
// whether it can hold the fleet (a reserve for the process itself).
func RaiseFDLimit(o Options) (FDLimit, error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return FDLimit{}, err
	}
	if rl.Cur < rl.Max {
		raised := rl
		raised.Cur = rl.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &raised); err == nil {
			rl = raised
		}
	}
	need := uint64(FDsPerDevice(o)*float64(o.Count)) + fdReserve
	return FDLimit{Soft: rl.Cur, Hard: rl.Max, Need: need, Enough: rl.Cur >= need}, nil
}

// Devices estimates how many devices the limit holds.
func (l FDLimit) Devices(o Options) int {
	if l.Soft < fdReserve {
		return 0
	}
	return int(float64(l.Soft-fdReserve) / FDsPerDevice(o))
}
