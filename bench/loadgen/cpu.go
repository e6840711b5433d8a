package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// userHZ is the unit of /proc CPU times (USER_HZ, 100 on Linux).
const userHZ = 100

// pidsFlag lists the processes to measure; several may share a name (all
// Caddy processes are "caddy"), and their times are then summed.
type pidsFlag [][2]string

func (f *pidsFlag) String() string { return fmt.Sprint(*f) }

// names returns the distinct process names, in flag order.
func (f pidsFlag) names() []string {
	var out []string
	for _, p := range f {
		if !slices.Contains(out, p[0]) {
			out = append(out, p[0])
		}
	}
	return out
}

// Set parses name=pid; pid "self" is this process.
func (f *pidsFlag) Set(s string) error {
	name, pid, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return fmt.Errorf("want name=pid, not %q", s)
	}
	if pid == "self" {
		pid = strconv.Itoa(os.Getpid())
	}
	if _, err := strconv.Atoi(pid); err != nil {
		return fmt.Errorf("pid %q: %w", pid, err)
	}
	*f = append(*f, [2]string{name, pid})
	return nil
}

// cpuTimes reads the CPU seconds (user + system, all threads) of the
// processes of each name as "cpu:<name>", and of the whole machine as "cpu:machine-busy"
// and "cpu:machine-total".
func cpuTimes(pids pidsFlag) (counters, error) {
	out := counters{}
	for _, p := range pids {
		b, err := os.ReadFile("/proc/" + p[1] + "/stat")
		if err != nil {
			return nil, fmt.Errorf("cpu of %s: %w", p[0], err)
		}
		// The command name may contain spaces; fields resume after ")".
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 13 {
			return nil, fmt.Errorf("cpu of %s: short stat", p[0])
		}
		utime, _ := strconv.ParseFloat(f[11], 64)
		stime, _ := strconv.ParseFloat(f[12], 64)
		out["cpu:"+p[0]] += (utime + stime) / userHZ
	}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	var total, idle float64
	for i, v := range f[1:] {
		n, _ := strconv.ParseFloat(v, 64)
		if i >= 8 { // guest time is already in user
			break
		}
		total += n
		if i == 3 || i == 4 {
			idle += n
		}
	}
	out["cpu:machine-busy"] = (total - idle) / userHZ
	out["cpu:machine-total"] = total / userHZ
	return out, nil
}
