package channel

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
)

// ReleaseStats summarises the reports of one release.
type ReleaseStats struct {
	Release  string
	Devices  int // distinct devices reporting
	Reports  int // distinct reports (by id)
	Success  int
	Rollback int
	Failure  int
	// Phases: per phase name, p50 and p95 in seconds.
	Phases map[string][2]float64
}

// Rate is count/Reports in percent (0 without reports).
func (s ReleaseStats) Rate(count int) float64 {
	if s.Reports == 0 {
		return 0
	}
	return 100 * float64(count) / float64(s.Reports)
}

// Stats reads reports, one JSON object per line (what a collector appends;
// blank lines and lines that do not parse are counted in bad and skipped),
// counts each report id once, and summarises per release, sorted by id.
func Stats(r io.Reader) (out []ReleaseStats, bad int, err error) {
	type acc struct {
		st      ReleaseStats
		devices map[string]bool
		phases  map[string][]float64
	}
	byRel := map[string]*acc{}
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		var rep Report
		if json.Unmarshal(line, &rep) != nil || rep.ID == "" || rep.Release == "" {
			bad++
			continue
		}
		if seen[rep.ID] {
			continue // a resend after a cut between the collector's answer and the spool update
		}
		seen[rep.ID] = true
		a := byRel[rep.Release]
		if a == nil {
			a = &acc{st: ReleaseStats{Release: rep.Release}, devices: map[string]bool{}, phases: map[string][]float64{}}
			byRel[rep.Release] = a
		}
		a.st.Reports++
		a.devices[rep.Device] = true
		switch rep.Result {
		case ResultSuccess:
			a.st.Success++
		case ResultRollback:
			a.st.Rollback++
		default:
			a.st.Failure++
		}
		for k, v := range rep.Phases {
			if !math.IsNaN(v) && v >= 0 {
				a.phases[k] = append(a.phases[k], v)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, bad, fmt.Errorf("channel: reports: %w", err)
	}
	for _, a := range byRel {
		a.st.Devices = len(a.devices)
		a.st.Phases = map[string][2]float64{}
		for k, v := range a.phases {
			sort.Float64s(v)
			a.st.Phases[k] = [2]float64{quantile(v, 0.50), quantile(v, 0.95)}
		}
		out = append(out, a.st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Release < out[j].Release })
	return out, bad, nil
}

// quantile is the nearest-rank quantile of sorted v.
func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(v)))) - 1
	return v[max(i, 0)]
}
