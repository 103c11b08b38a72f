package dbusapi

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"
)

// fakeBackend stands in for the engine: an install is `steps` progress
// events `tick` apart, cancellable. Engine behaviour itself is tested in
// internal/update; here the subject is the bus protocol.
type fakeBackend struct {
	steps int
	tick  time.Duration

	mu      sync.Mutex
	st      Status
	subs    []chan Event
	cancel  context.CancelFunc
	n       int
	emitted int
	opts    map[string]any // of the last Install
	// onInstall, when set, is told each transaction id as it starts.
	onInstall func(tx string)
}

func newFake(steps int, tick time.Duration) *fakeBackend {
	return &fakeBackend{steps: steps, tick: tick, st: Status{Operation: "idle", BootSlot: "A", Compatible: "test-board", Version: "1.0"}}
}

func (f *fakeBackend) emit(ev Event) {
	f.mu.Lock()
	subs := append([]chan Event(nil), f.subs...)
	f.emitted++
	f.mu.Unlock()
	for _, c := range subs {
		c <- ev
	}
}

func (f *fakeBackend) Install(ctx context.Context, source string, opts map[string]any) (string, error) {
	f.mu.Lock()
	if f.cancel != nil {
		f.mu.Unlock()
		return "", errBusy
	}
	f.n++
	f.opts = opts
	tx := fmt.Sprintf("tx-%d", f.n)
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	f.st.Operation = "writing"
	f.st.Progress = Progress{Total: int64(f.steps) * 1000, Phase: "writing " + source}
	hook := f.onInstall
	f.mu.Unlock()
	if hook != nil {
		hook(tx)
	}
	// A phase already over when the server handles its event (Status says
	// writing by now): it must still reach the bus, before writing.
	f.emit(Event{Kind: "status", Operation: "downloading"})
	go func() {
		result, msg := int32(0), "installed"
		for i := 1; i <= f.steps; i++ {
			select {
			case <-ctx.Done():
				result, msg = 1, "canceled"
			case <-time.After(f.tick):
			}
			if result != 0 {
				break
			}
			f.mu.Lock()
			f.st.Progress.Done = int64(i) * 1000
			f.st.Progress.Percent = int32(i * 100 / f.steps)
			f.mu.Unlock()
			f.emit(Event{Kind: "progress"})
		}
		f.mu.Lock()
		f.cancel = nil
		f.st.Operation = "idle"
		if result != 0 {
			f.st.LastError = msg
		}
		f.mu.Unlock()
		f.emit(Event{Kind: "completed", Tx: tx, Result: result, Message: msg})
	}()
	return tx, nil
}

var errBusy = errors.New("fake: busy")

func (f *fakeBackend) Cancel() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cancel == nil {
		return errors.New("fake: nothing to cancel")
	}
	f.cancel()
	return nil
}
func (f *fakeBackend) Reboot(context.Context) error { return nil }
func (f *fakeBackend) MarkGood(string) error        { return nil }
func (f *fakeBackend) MarkBad(string) error         { return nil }
func (f *fakeBackend) MarkActive(string) error      { return nil }
func (f *fakeBackend) Inspect(_ context.Context, src string) (map[string]any, error) {
	return map[string]any{"compatible": "test-board", "source": src}, nil
}
func (f *fakeBackend) Status() Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}
func (f *fakeBackend) Slots() []SlotStatus {
	return []SlotStatus{
		{Name: "A", Props: map[string]dbus.Variant{"state": dbus.MakeVariant("active")}},
		{Name: "B", Props: map[string]dbus.Variant{"state": dbus.MakeVariant("good")}},
	}
}
func (f *fakeBackend) Subscribe() (<-chan Event, func()) {
	c := make(chan Event, 16)
	f.mu.Lock()
	f.subs = append(f.subs, c)
	f.mu.Unlock()
	return c, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		for i, s := range f.subs {
			if s == c {
				f.subs = append(f.subs[:i], f.subs[i+1:]...)
			}
		}
	}
}

func classifyFake(err error) string {
	if errors.Is(err, errBusy) {
		return ErrBusy
	}
	return ""
}

// serve starts a bus with the given policy and exports b on it as root.
func serve(t *testing.T, policy string, b Backend, authz *Authorizer) (addr, dir string) {
	t.Helper()
	addr, dir = startBus(t, policy)
	conn, err := dbus.Connect(addr, dbus.WithIncomingInterceptor(CloseStrayFDs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	srv, err := Export(context.Background(), conn, b, Options{Authorizer: authz, Classify: classifyFake})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return addr, dir
}

func dialT(t *testing.T, addr string) *Client {
	t.Helper()
	c, err := Dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestInstallReportsProgressThenCompletedInOrder(t *testing.T) {
	// 400 progress events 5 ms apart: 2 s of install, 4 events per percent.
	b := newFake(400, 5*time.Millisecond)
	addr, _ := serve(t, includePolicy(t), b, nil)
	c := dialT(t, addr)

	var ops []string
	var percents []int32
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tx, res, msg, err := c.Install(ctx, "/tmp/bundle.otab", nil, func(u Update) {
		if u.Operation != "" {
			ops = append(ops, u.Operation)
		}
		if u.Progress != nil {
			percents = append(percents, u.Progress.Percent)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if res != 0 || msg != "installed" || tx != "tx-1" {
		t.Fatalf("Completed(%q, %d, %q), want (tx-1, 0, installed)", tx, res, msg)
	}
	if len(ops) < 2 || ops[0] != "downloading" || ops[1] != "writing" {
		t.Fatalf("operations seen %v, want downloading then writing", ops)
	}
	if len(percents) == 0 || percents[len(percents)-1] != 100 {
		t.Fatalf("last progress %v, want 100 at the end", percents)
	}
	for i := 1; i < len(percents); i++ {
		if percents[i] < percents[i-1] {
			t.Fatalf("progress went backwards: %v", percents)
		}
	}
	// The backend emitted 400 progress events; the bus saw at most one per
	// percent step (plus the once-a-second updates).
	if len(percents) > 105 || len(percents) < 50 {
		t.Fatalf("%d Progress changes for 400 backend events over 100 percent steps", len(percents))
	}
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Operation != "idle" || st.BootSlot != "A" || st.Compatible != "test-board" {
		t.Fatalf("status after install: %+v", st)
	}
}

func TestSecondInstallIsBusy(t *testing.T) {
	b := newFake(100, 20*time.Millisecond)
	addr, _ := serve(t, includePolicy(t), b, nil)
	c := dialT(t, addr)
	ctx := context.Background()
	var tx string
	if err := c.obj.CallWithContext(ctx, Interface+".Install", 0, "/tmp/first.otab", map[string]dbus.Variant{}).Store(&tx); err != nil {
		t.Fatal(err)
	}
	err := c.obj.CallWithContext(ctx, Interface+".Install", 0, "/tmp/second.otab", map[string]dbus.Variant{}).Store(&tx)
	var re *RemoteError
	if !errors.As(remote(err), &re) || re.Name != ErrBusy {
		t.Fatalf("second Install: %v, want %s", err, ErrBusy)
	}
	if re.ExitCode() != ExitBusy {
		t.Fatalf("exit code %d for Busy", re.ExitCode())
	}
	_ = c.Call(ctx, "Cancel")
}

func TestCancelMidWriteCompletesWithinASecond(t *testing.T) {
	b := newFake(1000, 20*time.Millisecond) // 20 s if not canceled
	addr, _ := serve(t, includePolicy(t), b, nil)
	c := dialT(t, addr)
	other := dialT(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type result struct {
		res int32
		msg string
		err error
	}
	done := make(chan result, 1)
	started := make(chan struct{}, 1)
	go func() {
		_, res, msg, err := c.Install(ctx, "/tmp/big.otab", nil, func(u Update) {
			if u.Progress != nil && u.Progress.Percent >= 2 {
				select {
				case started <- struct{}{}:
				default:
				}
			}
		})
		done <- result{res, msg, err}
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("install never made progress")
	}
	t0 := time.Now()
	if err := other.Call(ctx, "Cancel"); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.res == 0 || r.msg != "canceled" {
		t.Fatalf("after Cancel: result %d %q err %v, want a failed Completed", r.res, r.msg, r.err)
	}
	// Not a timing target: a guard that Cancel does not wait for the end.
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("Completed arrived %v after Cancel", d)
	}
}

func TestUnknownInstallOptionIsAnError(t *testing.T) {
	b := newFake(1, time.Millisecond)
	addr, _ := serve(t, includePolicy(t), b, nil)
	c := dialT(t, addr)
	var tx string
	err := c.obj.Call(Interface+".Install", 0, "/tmp/x.otab", map[string]dbus.Variant{"rebot": dbus.MakeVariant(true)}).Store(&tx)
	var re *RemoteError
	if !errors.As(remote(err), &re) || re.Name != ErrInvalidArgs || !strings.Contains(re.Msg, "rebot") || !strings.Contains(re.Msg, "fallback") {
		t.Fatalf("Install with unknown option: %v", err)
	}
	for _, bad := range []map[string]dbus.Variant{{"reboot": dbus.MakeVariant("yes")}, {"fallback": dbus.MakeVariant(true)}, {"fallback": dbus.MakeVariant("")}} {
		err = c.obj.Call(Interface+".Install", 0, "/tmp/x.otab", bad).Store(&tx)
		if !errors.As(remote(err), &re) || re.Name != ErrInvalidArgs {
			t.Fatalf("Install with mistyped option %v: %v", bad, err)
		}
	}
	// The known options reach the backend with their Go types.
	err = c.obj.Call(Interface+".Install", 0, "/tmp/x.otab", map[string]dbus.Variant{
		"reboot": dbus.MakeVariant(false), "fallback": dbus.MakeVariant("https://updates.example/full.otab")}).Store(&tx)
	if err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	got := b.opts
	b.mu.Unlock()
	if got["reboot"] != false || got["fallback"] != "https://updates.example/full.otab" {
		t.Fatalf("options at the backend: %#v", got)
	}
}

// --- unprivileged callers, as a child process with another UID ----------

const childEnv = "OTAD_DBUSAPI_CHILD"

func TestMain(m *testing.M) {
	if what := os.Getenv(childEnv); what != "" {
		os.Exit(childMain(what, os.Getenv("OTAD_DBUSAPI_BUS")))
	}
	os.Exit(m.Run())
}

// childMain performs one call and prints "ok" or the D-Bus error name.
func childMain(what, addr string) int {
	c, err := Dial(context.Background(), addr)
	if err != nil {
		fmt.Println("dial:", err)
		return 1
	}
	defer c.Close()
	ctx := context.Background()
	switch what {
	case "install":
		var tx string
		err = c.obj.CallWithContext(ctx, Interface+".Install", 0, "/tmp/x.otab", map[string]dbus.Variant{}).Store(&tx)
	case "markgood":
		err = c.Call(ctx, "MarkGood", "B")
	case "poll": // fleet_test.go
		err = c.Poll(ctx)
	case "status":
		_, err = c.Status(ctx)
	case "slots":
		_, err = c.Slots(ctx)
	case "inspect-flood":
		fmt.Println(floodChild(c, strings.Split(os.Getenv("OTAD_FLOOD"), ":")))
		return 0
	case "inspect-n":
		n, _ := strconv.Atoi(os.Getenv("OTAD_N"))
		fmt.Println(inspectN(c, os.Getenv("OTAD_PATH"), n))
		return 0
	case "inspect-path":
		_, err = c.Inspect(ctx, os.Getenv("OTAD_PATH"))
		if re, ok := remote(err).(*RemoteError); ok {
			fmt.Println(re.Name, re.Msg)
			return 0
		}
	}
	if err != nil {
		var re *RemoteError
		if errors.As(remote(err), &re) {
			fmt.Println(re.Name)
			return 0
		}
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println("ok")
	return 0
}

// runAs runs this test binary as uid/gid 65534 (nobody) doing one call.
func runAs(t *testing.T, dir, addr, what string) string {
	t.Helper()
	return runAsWith(t, dir, addr, what, nil)
}

func runAsWith(t *testing.T, dir, addr, what string, env []string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "child.test")
	if _, err := os.Stat(bin); err != nil {
		in, err := os.Open(self)
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, in); err != nil {
			t.Fatal(err)
		}
		in.Close()
		out.Close()
	}
	cmd := exec.Command(bin)
	cmd.Env = append([]string{childEnv + "=" + what, "OTAD_DBUSAPI_BUS=" + addr}, env...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child %s: %v\n%s", what, err, out)
	}
	return strings.TrimSpace(string(out))
}

func requireRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a child as another UID")
	}
}

func TestUnprivilegedCallerRefusedByBusPolicy(t *testing.T) {
	requireRoot(t)
	b := newFake(1, time.Millisecond)
	addr, dir := serve(t, includePolicy(t), b, nil)
	for what, want := range map[string]string{
		"install":  "org.freedesktop.DBus.Error.AccessDenied",
		"markgood": "org.freedesktop.DBus.Error.AccessDenied",
		"status":   "ok",
		"slots":    "ok",
	} {
		if got := runAs(t, dir, addr, what); got != want {
			t.Errorf("nobody %s under the shipped policy: %q, want %q", what, got, want)
		}
	}
	if b.n != 0 {
		t.Fatalf("backend saw %d installs from an unprivileged caller", b.n)
	}
}

func TestUnprivilegedCallerRefusedInProcess(t *testing.T) {
	requireRoot(t)
	b := newFake(1, time.Millisecond)
	// The bus lets everybody through; only the in-process check is left.
	addr, dir := serve(t, openPolicy, b, &Authorizer{Group: "otad", GroupsOf: func(uint32) ([]string, error) { return []string{"nogroup"}, nil }})
	for what, want := range map[string]string{"install": ErrNotAuthorized, "markgood": ErrNotAuthorized, "status": "ok"} {
		if got := runAs(t, dir, addr, what); got != want {
			t.Errorf("nobody %s with an open bus: %q, want %q", what, got, want)
		}
	}
	if b.n != 0 {
		t.Fatalf("backend saw %d installs from an unprivileged caller", b.n)
	}
}

func TestGroupMemberAllowedInProcess(t *testing.T) {
	requireRoot(t)
	b := newFake(1, time.Millisecond)
	addr, dir := serve(t, openPolicy, b, &Authorizer{Group: "otad", GroupsOf: func(uid uint32) ([]string, error) {
		if uid == 65534 {
			return []string{"nogroup", "otad"}, nil
		}
		return nil, nil
	}})
	if got := runAs(t, dir, addr, "install"); got != "ok" {
		t.Fatalf("otad group member Install: %q", got)
	}
}

// --- the contract --------------------------------------------------------

func contractIface(t *testing.T, data []byte) introspect.Interface {
	t.Helper()
	var n introspect.Node
	if err := xml.Unmarshal(data, &n); err != nil {
		t.Fatal(err)
	}
	for _, i := range n.Interfaces {
		if i.Name == Interface {
			return i
		}
	}
	t.Fatalf("no %s interface in introspection", Interface)
	return introspect.Interface{}
}

func methodSig(m introspect.Method) string {
	var in, out []string
	for _, a := range m.Args {
		if a.Direction == "out" {
			out = append(out, a.Type)
		} else {
			in = append(in, a.Type)
		}
	}
	return m.Name + "(" + strings.Join(in, ",") + ")->(" + strings.Join(out, ",") + ")"
}

func ifaceSummary(i introspect.Interface) []string {
	var s []string
	for _, m := range i.Methods {
		s = append(s, "method "+methodSig(m))
	}
	for _, sg := range i.Signals {
		var ts []string
		for _, a := range sg.Args {
			ts = append(ts, a.Type)
		}
		s = append(s, "signal "+sg.Name+"("+strings.Join(ts, ",")+")")
	}
	for _, p := range i.Properties {
		s = append(s, "property "+p.Name+" "+p.Type+" "+p.Access)
	}
	sort.Strings(s)
	return s
}

// The method table exports exactly the contract's methods, argument types
// derived from the Go signatures (dbus.Sender is not on the wire).
func TestObjectImplementsContract(t *testing.T) {
	data, err := os.ReadFile("../../docs/io.otad.Update1.xml")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, m := range contractIface(t, data).Methods {
		want[m.Name] = methodSig(m)
	}
	got := map[string]string{}
	senderT := reflect.TypeOf(dbus.Sender(""))
	errT := reflect.TypeOf((*dbus.Error)(nil))
	for name, fn := range (*object)(&Server{}).methodTable() {
		ft := reflect.TypeOf(fn)
		if ft.Kind() != reflect.Func || ft.NumOut() == 0 || ft.Out(ft.NumOut()-1) != errT {
			t.Errorf("%s: %v does not end in *dbus.Error; godbus would silently skip it", name, ft)
			continue
		}
		var in, out []string
		for j := 0; j < ft.NumIn(); j++ {
			if ft.In(j) == senderT {
				continue
			}
			in = append(in, dbus.SignatureOfType(ft.In(j)).String())
		}
		for j := 0; j < ft.NumOut()-1; j++ {
			out = append(out, dbus.SignatureOfType(ft.Out(j)).String())
		}
		got[name] = name + "(" + strings.Join(in, ",") + ")->(" + strings.Join(out, ",") + ")"
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("exported methods differ from the contract\n got %v\nwant %v", got, want)
	}
	// Properties carry the contract's types.
	st := Status{}
	types := map[string]string{
		"Operation": dbus.SignatureOf(st.Operation).String(), "Progress": dbus.SignatureOf(st.Progress).String(),
		"LastError": "s", "BootSlot": "s", "Compatible": "s", "Version": "s", "TrialBoot": dbus.SignatureOf(st.TrialBoot).String(),
	}
	for k, v := range fleetProps(nil) { // fleet.go
		types[k] = dbus.SignatureOf(v).String()
	}
	for _, p := range contractIface(t, data).Properties {
		if types[p.Name] != p.Type {
			t.Errorf("property %s: contract type %s, Go type %s", p.Name, p.Type, types[p.Name])
		}
	}
}

// The running service's introspection, read over the bus with busctl,
// matches the checked-in XML.
func TestRunningServiceMatchesContract(t *testing.T) {
	b := newFake(1, time.Millisecond)
	addr, _ := serve(t, includePolicy(t), b, nil)
	data, err := os.ReadFile("../../docs/io.otad.Update1.xml")
	if err != nil {
		t.Fatal(err)
	}
	want := ifaceSummary(contractIface(t, data))

	c := dialT(t, addr)
	var xmlData string
	if err := c.conn.Object(BusName, ObjectPath).Call("org.freedesktop.DBus.Introspectable.Introspect", 0).Store(&xmlData); err != nil {
		t.Fatal(err)
	}
	if got := ifaceSummary(contractIface(t, []byte(xmlData))); !reflect.DeepEqual(got, want) {
		t.Fatalf("introspection differs\n got %v\nwant %v", got, want)
	}

	if _, err := exec.LookPath("busctl"); err != nil {
		t.Fatal("busctl not installed: run make deps")
	}
	out, err := exec.Command("busctl", "--address="+addr, "introspect", "--no-pager", "--no-legend", BusName, string(ObjectPath), Interface).CombinedOutput()
	if err != nil {
		t.Fatalf("busctl introspect: %v\n%s", err, out)
	}
	members := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 {
			members[strings.TrimPrefix(f[0], ".")] = f[1] + " " + f[2]
		}
	}
	iface := contractIface(t, data)
	for _, m := range iface.Methods {
		var in string
		for _, a := range m.Args {
			if a.Direction != "out" {
				in += a.Type
			}
		}
		if in == "" {
			in = "-"
		}
		if got := members[m.Name]; got != "method "+in {
			t.Errorf("busctl shows %s as %q, want method %s", m.Name, got, in)
		}
	}
	for _, p := range iface.Properties {
		if got := members[p.Name]; got != "property "+p.Type {
			t.Errorf("busctl shows %s as %q, want property %s", p.Name, got, p.Type)
		}
	}
	for _, s := range iface.Signals {
		if !strings.HasPrefix(members[s.Name], "signal ") {
			t.Errorf("busctl lacks signal %s", s.Name)
		}
	}
}

// A change the backend made without an event the server saw (the engine
// confirmed a trial boot before the bus was up) still reaches the bus.
func TestPropertiesCatchUpWithoutEvents(t *testing.T) {
	b := newFake(1, time.Millisecond)
	b.st.Operation, b.st.TrialBoot = "confirming", true
	addr, _ := serve(t, includePolicy(t), b, nil)
	c := dialT(t, addr)
	b.mu.Lock()
	b.st.Operation, b.st.TrialBoot = "idle", false // no event emitted
	b.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := c.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.Operation == "idle" && !st.TrialBoot {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("properties stuck at %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
