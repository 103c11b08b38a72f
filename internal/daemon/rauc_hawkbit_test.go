package daemon

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otadev/otad/internal/hawkbit/dditest"
)

// rhuEnv names a rauc-hawkbit-updater binary built from its public source
// (github.com/rauc/rauc-hawkbit-updater: meson setup build && ninja -C
// build, outside this tree). It is not built or vendored here.
const rhuEnv = "OTAD_RAUC_HAWKBIT_UPDATER"

// TestRAUCHawkbitUpdater: rauc-hawkbit-updater, unmodified, polls the DDI
// test server, hands the deployment to otad through RAUC's InstallBundle
// (streaming: the URL plus its TargetToken in http-headers), waits for
// Completed and reports the result; the action must end closed/success and
// otad must hold the bundle in the other slot.
func TestRAUCHawkbitUpdater(t *testing.T) {
	bin := os.Getenv(rhuEnv)
	if bin == "" {
		t.Skipf("set %s to a rauc-hawkbit-updater binary built from its public source", rhuEnv)
	}
	r := newRig(t, shippedPolicies(t, false))
	r.start()
	data, err := os.ReadFile(r.b.bundle("5.0", 1, img(true, 13, 1<<20)))
	must(t, err)
	srv := dditest.New(t, "DEFAULT", "gw-rauc-1", "tok-rhu-1")
	srv.Lock(func() { srv.Sleep = "00:00:01" })
	action := srv.Deploy(dditest.Action{Download: "forced", Update: "forced", Part: "os", Version: "5.0",
		Files: []dditest.File{{Name: "update-5.0.raucb", Data: data}}})
	u, err := url.Parse(srv.URL)
	must(t, err)
	conf := filepath.Join(r.dir, "rhu.conf")
	must(t, os.WriteFile(conf, fmt.Appendf(nil, `[client]
hawkbit_server = %s
ssl = false
ssl_verify = true
tenant_id = DEFAULT
target_name = gw-rauc-1
auth_token = tok-rhu-1
stream_bundle = true
retry_wait = 1
connect_timeout = 5
timeout = 30
post_update_reboot = false
log_level = debug

[device]
product = otad-test
`, u.Host), 0o644))

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-c", conf, "--run-once", "--debug")
	cmd.Env = []string{"DBUS_SYSTEM_BUS_ADDRESS=" + r.addr, "PATH=/usr/bin:/bin", "LANG=C.UTF-8"}
	out, err := cmd.CombinedOutput()
	t.Logf("rauc-hawkbit-updater:\n%s", out)
	if ctx.Err() != nil {
		t.Fatal("rauc-hawkbit-updater did not finish within 3 minutes")
	}
	if err != nil {
		t.Fatalf("rauc-hawkbit-updater: %v", err)
	}
	var log []string
	for _, f := range srv.Feedback() {
		log = append(log, f.String())
	}
	t.Logf("feedback:\n%s", strings.Join(log, "\n"))
	finals := srv.Finals(action)
	if len(finals) != 1 || finals[0].Execution != "closed" || finals[0].Finished != "success" {
		t.Fatalf("action %s ended %v, want one closed/success", action, finals)
	}
	// The artifact was fetched by otad with the device's token, not by
	// the updater (stream_bundle).
	sawToken := false
	for _, req := range srv.Requests() {
		if strings.Contains(req.Path, "/artifacts/") && req.Auth == "TargetToken tok-rhu-1" {
			sawToken = true
		}
	}
	if !sawToken {
		t.Fatalf("no artifact request carried the target token: %+v", srv.Requests())
	}
	if got, st := r.otadSlots(), r.otadStatus(); got["B"] != "pending" || st.Operation != "pending-reboot" {
		t.Fatalf("otad after the hawkBit deployment: %v %+v", got, st)
	}
}
