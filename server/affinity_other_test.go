//go:build !linux

package main

// Elsewhere than Linux the benchmarks run unpinned: an empty mask reads as
// "fewer than two CPUs".
func threadAffinity(int) (cpuMask, error) { return cpuMask{}, nil }

func pinProcess(int, cpuMask) error { return nil }
