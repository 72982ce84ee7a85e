package main

// cpuMask is a CPU affinity mask for up to 1,024 CPUs, as Linux's
// sched_setaffinity takes it.
type cpuMask [16]uint64

func maskOf(cpus ...int) cpuMask {
	var m cpuMask
	for _, c := range cpus {
		m[c/64] |= 1 << (c % 64)
	}
	return m
}

// allowedCPUs lists the CPUs a mask allows.
func (m cpuMask) allowedCPUs() []int {
	var cpus []int
	for i := range len(m) * 64 {
		if m[i/64]&(1<<(i%64)) != 0 {
			cpus = append(cpus, i)
		}
	}
	return cpus
}
