package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's CPU times (100 on
// every Linux architecture Go supports).
const clockTicks = 100

// procTimes is one /proc/<pid>/stat: the parent and the CPU time of the
// process (utime+stime) plus that of its waited-for children
// (cutime+cstime), in clock ticks.
type procTimes struct {
	ppid  int
	ticks uint64
	// own is utime+stime alone: the process's own threads.
	own uint64
}

func readStat(pid int) (procTimes, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procTimes{}, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procTimes{}, fmt.Errorf("bench: /proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state): ppid is field 4, utime..cstime fields 14-17.
	if len(f) < 15 {
		return procTimes{}, fmt.Errorf("bench: /proc/%d/stat: malformed", pid)
	}
	ppid, _ := strconv.Atoi(f[1])
	var t, own uint64
	for i, k := range f[11:15] {
		v, err := strconv.ParseUint(k, 10, 64)
		if err != nil {
			return procTimes{}, fmt.Errorf("bench: /proc/%d/stat: %w", pid, err)
		}
		t += v
		if i < 2 {
			own += v
		}
	}
	return procTimes{ppid: ppid, ticks: t, own: own}, nil
}

// TreeCPUSeconds returns the CPU time used so far by the process root and
// every process below it: the live ones' own time and the time of those
// that already exited and were waited for (cutime/cstime). For a
// PostgreSQL postmaster that is the whole cluster, backends that came and
// went included. Differences of two readings are CPU used in between.
func TreeCPUSeconds(root int) (float64, error) {
	rootTimes, err := readStat(root)
	if err != nil {
		return 0, err
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	all := map[int]procTimes{}
	children := map[int][]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == root {
			continue
		}
		pt, err := readStat(pid)
		if err != nil {
			continue // exited meanwhile
		}
		all[pid] = pt
		children[pt.ppid] = append(children[pt.ppid], pid)
	}
	total := rootTimes.ticks
	queue := append([]int(nil), children[root]...)
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		total += all[pid].ticks
		queue = append(queue, children[pid]...)
	}
	return float64(total) / clockTicks, nil
}

// OwnCPUSeconds returns the CPU time used so far by the process's own
// threads, none of its children's.
func OwnCPUSeconds(pid int) (float64, error) {
	pt, err := readStat(pid)
	if err != nil {
		return 0, err
	}
	return float64(pt.own) / clockTicks, nil
}

// cpuSample is the CPU seconds of each measured process at one moment.
type cpuSample map[string]float64

// sampleCPU reads the CPU time of every named process tree; a process that
// cannot be read is left out (and so reported missing). The stack runner
// counts its own threads only: every other measured process (services,
// PostgreSQL, ClickHouse, loadgen) is its child and is counted under its
// own name.
func sampleCPU(pids map[string]int) cpuSample {
	out := cpuSample{}
	for name, pid := range pids {
		read := TreeCPUSeconds
		if name == runnerProcess {
			read = OwnCPUSeconds
		}
		if v, err := read(pid); err == nil {
			out[name] = v
		}
	}
	return out
}
