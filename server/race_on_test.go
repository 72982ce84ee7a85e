//go:build race

package main

// raceEnabled: the race detector slows every goroutine several times, so
// load tests scale down under it.
const raceEnabled = true
