package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/otadev/otad/internal/logging"
)

// otadMessageIDs are the MESSAGE_IDs of otad's key events, by OTAD_EVENT.
var otadMessageIDs = logging.MessageIDs

// Checks of otad's native journald output and sd_notify STATUS= in the
// systemd tier (issue 20), read from what the guest's own journalctl and
// systemctl printed.

// guestJournal is the shell the systemd-tier steps use to save otad's
// journal: journalctl's own filters (-p err, MESSAGE_ID=) do the selecting,
// -o json keeps every field. For each MESSAGE_ID otad logged in this boot
// it runs `journalctl MESSAGE_ID=<id>`; with the catalog installed, `-x`
// shows its explanation.
const guestJournal = `
journal_dump() { # TAG: this boot's otad journal, as the three queries see it
	journalctl -p err -u otad.service -o json >/host/jerr-$1.json 2>>/host/step.log
	journalctl -u otad.service -o export 2>/dev/null | sed -n 's/^MESSAGE_ID=//p' | sort -u >/tmp/ids
	: >/host/jid-$1.json
	while read -r id; do
		journalctl MESSAGE_ID=$id -o json >>/host/jid-$1.json 2>>/host/step.log
	done </tmp/ids
	journalctl --update-catalog 2>>/host/step.log
	journalctl -x -p err -u otad.service --no-pager >/host/jx-$1.txt 2>&1
}
`

// followJournal makes vmtest-journal.service (started before otad.service
// on every boot) follow `journalctl -p err -u otad` and `journalctl
// MESSAGE_ID=<id>` for each event into the share, one file per boot and
// query, so a boot that ends seconds after otad's decision still leaves
// what those queries showed.
func (m *machine) followJournal(tag string, events ...string) error {
	var b strings.Builder
	b.WriteString("#!/bin/sh\nb=$(cat /proc/sys/kernel/random/boot_id)\n")
	// line-buffered: a follower killed by the shutdown keeps what it printed
	fmt.Fprintf(&b, "stdbuf -oL journalctl -f -p err -u otad.service -o json >>/host/jerr-%s-$b.json 2>>/host/step.log &\n", tag)
	for _, ev := range events {
		id, ok := otadMessageIDs[ev]
		if !ok {
			return fmt.Errorf("no MESSAGE_ID for event %q", ev)
		}
		fmt.Fprintf(&b, "stdbuf -oL journalctl -f MESSAGE_ID=%s -o json >>/host/jid-%s-$b-%s.json 2>>/host/step.log &\n", id, tag, ev)
	}
	b.WriteString("wait\n")
	return writeFile(filepath.Join(m.share(), "journal-follow.sh"), b.String(), 0o755)
}

// jentry is one journal entry as journalctl -o json prints it; binary
// fields (arrays of bytes) are decoded to text.
type jentry map[string]string

func readJournalJSON(path string) ([]jentry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []jentry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var raw map[string]any
		if err := json.Unmarshal([]byte(line), &raw); err != nil {
			return nil, fmt.Errorf("%s: %w: %.200s", filepath.Base(path), err, line)
		}
		e := jentry{}
		for k, v := range raw {
			switch v := v.(type) {
			case string:
				e[k] = v
			case []any: // bytes, or a repeated field
				var b []byte
				for _, x := range v {
					if n, ok := x.(float64); ok {
						b = append(b, byte(n))
					}
				}
				e[k] = string(b)
			}
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

// readJournals reads every file matching the glob in the machine's share.
func (m *machine) readJournals(glob string) ([]jentry, error) {
	paths, _ := filepath.Glob(filepath.Join(m.share(), glob))
	sort.Strings(paths)
	var out []jentry
	for _, p := range paths {
		es, err := readJournalJSON(p)
		if err != nil {
			return nil, err
		}
		out = append(out, es...)
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("the guest saved no journal matching %s", glob)
	}
	return out, nil
}

// checkJournalEvent finds otad's key event in what `journalctl -p err -u
// otad` printed (errGlob): priority err or worse, its MESSAGE_ID, and the
// fields named all set; then the same entry (same OTAD_TX) in what
// `journalctl MESSAGE_ID=<id>` printed (idGlob). It returns the entry.
func (m *machine) checkJournalEvent(errGlob, idGlob, event string, fields ...string) (jentry, error) {
	errs, err := m.readJournals(errGlob)
	if err != nil {
		return nil, err
	}
	var found jentry
	var seen []string
	for _, e := range errs {
		seen = append(seen, e["OTAD_EVENT"]+":"+e["MESSAGE"])
		if e["OTAD_EVENT"] == event {
			found = e
		}
	}
	if found == nil {
		return nil, fmt.Errorf("journalctl -p err -u otad shows no %q event (OTAD_EVENT); it shows %d entries: %.600s", event, len(errs), strings.Join(seen, " | "))
	}
	if p, err := strconv.Atoi(found["PRIORITY"]); err != nil || p > 3 {
		return nil, fmt.Errorf("%s: PRIORITY %q, want err (3) or worse", event, found["PRIORITY"])
	}
	id := found["MESSAGE_ID"]
	if want, ok := otadMessageIDs[event]; !ok || id != want {
		return nil, fmt.Errorf("%s: MESSAGE_ID %q, want %q", event, id, want)
	}
	for _, f := range fields {
		if found[f] == "" {
			return nil, fmt.Errorf("%s entry without %s: %v", event, f, found)
		}
	}
	if idGlob != "" {
		ids, err := m.readJournals(idGlob)
		if err != nil {
			return nil, err
		}
		ok := false
		for _, e := range ids {
			ok = ok || (e["MESSAGE_ID"] == id && e["OTAD_TX"] == found["OTAD_TX"] && e["OTAD_EVENT"] == event)
		}
		if !ok {
			return nil, fmt.Errorf("journalctl MESSAGE_ID=%s does not show the %s entry of %s", id, event, found["OTAD_TX"])
		}
	}
	return found, nil
}

// fieldsOf is a short "KEY=value ..." of an entry's otad fields.
func fieldsOf(e jentry, keys ...string) string {
	var b []string
	for _, k := range keys {
		v := e[k]
		if len(v) > 60 {
			v = v[:60] + "…"
		}
		b = append(b, strings.TrimPrefix(k, "OTAD_")+"="+v)
	}
	return strings.Join(b, " ")
}

// statusLine is the "Status:" line `systemctl status` prints from STATUS=.
var statusLine = regexp.MustCompile(`(?m)^\s*Status: "([^"]*)"`)

// progressStatus returns the STATUS= texts seen in repeated `systemctl
// status otad` captures, and the first that reads like install progress
// (a percentage).
func progressStatus(capture string) (all []string, progress string) {
	seen := map[string]bool{}
	for _, m := range statusLine.FindAllStringSubmatch(capture, -1) {
		if !seen[m[1]] {
			seen[m[1]] = true
			all = append(all, m[1])
		}
		if progress == "" && regexp.MustCompile(`\d+%`).MatchString(m[1]) {
			progress = m[1]
		}
	}
	return all, progress
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
