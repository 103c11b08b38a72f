package powercut

import (
	"fmt"
	mrand "math/rand/v2"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestPowerCutReference runs every cycle on every medium without a cut:
// the cycles themselves must pass, and their operation counts are the
// campaign's cut ranges.
func TestPowerCutReference(t *testing.T) {
	f := loadFixtures(t)
	for _, m := range media {
		for _, c := range cycles {
			b := newBoard(t, f, m, LoseUnsynced, 1)
			res, err := b.run(c)
			if err != nil {
				t.Errorf("%s/%s without a cut: %v", m.name, c.name, err)
				continue
			}
			t.Logf("%-7s %-20s %4d ops %2d boots", m.name, c.name, res.ops, res.boots)
		}
	}
}

var modes = []TearMode{LoseUnsynced, TearRandom, KeepUnsynced}

// TestPowerCutCampaign cuts the power at every write operation of every
// cycle on every medium, in every tear mode. OTAD_POWERCUT=full runs all
// cut points; otherwise a seeded sample.
func TestPowerCutCampaign(t *testing.T) {
	full := os.Getenv("OTAD_POWERCUT") == "full"
	f := loadFixtures(t)
	start := time.Now()
	total, bad := 0, 0
	var lines []string
	byKind := map[string]int{}
	for _, m := range media {
		for _, c := range cycles {
			ref := newBoard(t, f, m, LoseUnsynced, 1)
			rr, err := ref.run(c)
			if err != nil {
				t.Errorf("%s/%s reference: %v", m.name, c.name, err)
				continue
			}
			n := rr.ops
			type job struct {
				k    int
				mode TearMode
				seed uint64
			}
			var jobs []job
			for k := 1; k <= n; k++ {
				for mi, mode := range modes {
					seed := uint64(k)*31 + uint64(mi)
					if !full && (seed*0x9e3779b97f4a7c15)>>60 != 0 { // 1 in 16
						continue
					}
					jobs = append(jobs, job{k, mode, seed})
				}
			}
			type outcome struct {
				job
				cut bool
				err error
			}
			out := make([]outcome, len(jobs))
			var next atomic.Int64
			var wg sync.WaitGroup
			for range runtime.GOMAXPROCS(0) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := int(next.Add(1)) - 1
						if i >= len(jobs) {
							return
						}
						j := jobs[i]
						b, err := makeBoard(f, m, j.mode, j.seed)
						if err != nil {
							out[i] = outcome{job: j, err: fmt.Errorf("factory setup: %w", err)}
							continue
						}
						b.dom.CutAt(j.k)
						res, err := b.run(c)
						out[i] = outcome{j, res.cut, err}
					}
				}()
			}
			wg.Wait()
			points, viol, notCut := len(out), 0, 0
			for _, o := range out {
				if !o.cut {
					notCut++
				}
				if o.err != nil {
					key := classify(o.err)
					byKind[key]++
					viol++
					if byKind[key] <= 3 {
						t.Errorf("%s/%s cut at op %d/%d (%v): %v", m.name, c.name, o.k, n, o.mode, o.err)
					}
				}
			}
			total += points
			bad += viol
			lines = append(lines, fmt.Sprintf("%-7s %-20s N=%4d cut points %6d violations %d", m.name, c.name, n, points, viol))
			if notCut > 0 {
				t.Errorf("%s/%s: %d runs never reached their cut point (non-deterministic op count)", m.name, c.name, notCut)
			}
		}
	}
	for _, l := range lines {
		t.Log(l)
	}
	var kinds []string
	for k, v := range byKind {
		kinds = append(kinds, fmt.Sprintf("%6d  %s", v, k))
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		t.Log("violation kind:", k)
	}
	mode := "sampled 1/16"
	if full {
		mode = "full"
	}
	t.Logf("power-cut campaign (%s): %d distinct cut points, %d violations, %s",
		mode, total, bad, time.Since(start).Round(time.Millisecond))
	fmt.Printf("POWERCUT %s: %d cut points, %d violations\n", mode, total, bad)
}

// classify groups violations by their message without numbers.
func classify(err error) string {
	s := err.Error()
	var b strings.Builder
	for _, r := range s {
		if r >= '0' && r <= '9' {
			continue
		}
		b.WriteRune(r)
	}
	out := b.String()
	if len(out) > 120 {
		out = out[:120]
	}
	return out
}

// TestPowerCutRecovery cuts the power again while the board recovers from
// a first cut (daemon restart, resume, commit or rollback after a cut):
// cut at op k, then 1 to 3 more times, each j ops after the last power-on.
// The full run takes 60 seeded cases per cycle and medium, the default 6.
func TestPowerCutRecovery(t *testing.T) {
	pairs := 6
	if os.Getenv("OTAD_POWERCUT") == "full" {
		pairs = 60
	}
	f := loadFixtures(t)
	total, bad, double := 0, 0, 0
	for mi, m := range media {
		for ci, c := range cycles {
			ref := newBoard(t, f, m, LoseUnsynced, 1)
			rr, err := ref.run(c)
			if err != nil {
				t.Fatalf("%s/%s reference: %v", m.name, c.name, err)
			}
			rng := mrand.New(mrand.NewPCG(uint64(mi), uint64(ci)))
			for range pairs {
				k := 1 + rng.IntN(rr.ops)
				var again []int
				for range 1 + rng.IntN(3) {
					again = append(again, 1+rng.IntN(60))
				}
				mode := modes[rng.IntN(len(modes))]
				b := newBoard(t, f, m, mode, rng.Uint64())
				b.recheckView = true // cuts during recovery: the hardest case for the cache
				b.dom.CutAt(k)
				b.again = append([]int(nil), again...)
				j := again
				res, err := b.run(c)
				total++
				if res.cuts >= 2 {
					double++ // at least one cut during recovery
				}
				if err != nil {
					bad++
					t.Errorf("%s/%s cut at op %d and again %v ops after each power-on (%v): %v", m.name, c.name, k, j, mode, err)
				}
			}
		}
	}
	t.Logf("recovery cuts: %d runs (%d with both cuts), %d violations", total, double, bad)
	fmt.Printf("POWERCUT recovery: %d runs, %d double cuts, %d violations\n", total, double, bad)
}
