package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// machine is one virtual gateway: its disk, its two pflash banks (U-Boot,
// environment) and a 9p share through which the guest reports. The files
// outlive a QEMU process, so killing QEMU is a power cut and starting it again
// is power-on.
type machine struct {
	dir     string // holds disk.img, flash1.img, share/, console-N.log
	art     *artifacts
	cmd     *exec.Cmd
	done    chan error
	powerOn int  // QEMU starts so far
	watchdg bool // add an i6300esb
	smp     int  // vCPUs (0: 1)
	slotMiB int  // size of each slot partition
	// redundant: boot the U-Boot with a redundant flash env (boolean flags)
	// and native bootcount instead of Debian's single-copy one
	redundant bool
}

func (m *machine) flash0() string {
	if m.redundant {
		return m.art.flash0Red
	}
	return m.art.flash0
}
func (m *machine) share() string    { return filepath.Join(m.dir, "share") }
func (m *machine) disk() string     { return filepath.Join(m.dir, "disk.img") }
func (m *machine) envFlash() string { return filepath.Join(m.dir, "flash1.img") }

// start powers the board on. QEMU runs with -nic none; it dies with this
// process (Pdeathsig) and stop kills it by PID, so no exit path leaves one
// behind.
func (m *machine) start() error {
	if m.cmd != nil {
		return errors.New("machine already running")
	}
	m.powerOn++
	console := filepath.Join(m.dir, fmt.Sprintf("console-%d.log", m.powerOn))
	smp := max(m.smp, 1)
	args := []string{
		"-M", "virt", "-cpu", "cortex-a57", "-smp", fmt.Sprint(smp), "-m", "512",
		"-display", "none", "-monitor", "none", "-nic", "none", "-audio", "none",
		"-serial", "file:" + console,
		"-drive", "if=pflash,format=raw,readonly=on,file=" + m.flash0(),
		"-drive", "if=pflash,format=raw,file=" + m.envFlash(),
		"-drive", "if=none,id=d0,format=raw,cache=unsafe,file=" + m.disk(),
		"-device", "virtio-blk-device,drive=d0",
		"-fsdev", "local,id=fs0,security_model=none,path=" + m.share(),
		"-device", "virtio-9p-device,fsdev=fs0,mount_tag=host",
	}
	if m.watchdg {
		args = append(args, "-device", "i6300esb")
	}
	cmd := exec.Command(m.art.qemu, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start qemu: %w", err)
	}
	live.add(cmd.Process.Pid)
	m.cmd = cmd
	m.done = make(chan error, 1)
	go func() {
		err := cmd.Wait()
		live.remove(cmd.Process.Pid)
		if err != nil && errb.Len() > 0 {
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(errb.String()))
		}
		m.done <- err
	}()
	return nil
}

// cut kills QEMU at once: a power cut. cache=unsafe above does not weaken
// this: the disk image is a host file, and what QEMU wrote with pwrite before
// the kill is in the host page cache exactly as a real disk's written sectors
// are; writes still queued inside QEMU are lost, like a drive's cache.
func (m *machine) cut() {
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Kill()
	<-m.done
	m.cmd = nil
}

func (m *machine) running() bool {
	if m.cmd == nil {
		return false
	}
	select {
	case err := <-m.done:
		m.done <- err
		return false
	default:
		return true
	}
}

// console returns the text of all console logs so far (for boot counting
// and failure reports only; results come over the share).
func (m *machine) console() string {
	var b strings.Builder
	for i := 1; i <= m.powerOn; i++ {
		d, _ := os.ReadFile(filepath.Join(m.dir, fmt.Sprintf("console-%d.log", i)))
		b.Write(d)
	}
	return b.String()
}

// ubootStarts counts U-Boot banners: one per power-on or reset.
func (m *machine) ubootStarts() int { return strings.Count(m.console(), "U-Boot 20") }

// event is one line the guest appended to /host/events: a word, then
// key=value fields.
type event struct {
	kind   string
	fields map[string]string
	raw    string
}

func (m *machine) events() []event {
	f, err := os.Open(filepath.Join(m.share(), "events"))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []event
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		parts := strings.Fields(line)
		if len(parts) == 0 {
			continue
		}
		ev := event{kind: parts[0], fields: map[string]string{}, raw: line}
		for _, p := range parts[1:] {
			if k, v, ok := strings.Cut(p, "="); ok {
				ev.fields[k] = v
			}
		}
		out = append(out, ev)
	}
	return out
}

// waitEvent waits until the events file has more than `after` events and one
// of the new ones satisfies match. It fails early when QEMU exits.
func (m *machine) waitEvent(ctx context.Context, after int, timeout time.Duration, match func(event) bool) (event, int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		evs := m.events()
		for i := after; i < len(evs); i++ {
			if match(evs[i]) {
				return evs[i], i + 1, nil
			}
		}
		if !m.running() {
			return event{}, len(evs), fmt.Errorf("qemu exited while waiting (%s)", m.exitErr())
		}
		select {
		case <-ctx.Done():
			return event{}, len(evs), fmt.Errorf("timeout after %v waiting for guest event", timeout)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (m *machine) exitErr() string {
	select {
	case err := <-m.done:
		m.done <- err
		if err == nil {
			return "exit 0"
		}
		return err.Error()
	default:
		return "running"
	}
}
