// Package nginxtest starts Debian's nginx for a test: in the foreground
// (no daemon), with its own configuration, pid file and logs in a temporary
// directory, on a free 127.0.0.1 port, serving a directory as is. POST
// /report bodies are appended to a JSON-lines file, one body per line (the
// channel's outcome reports, collected with nginx alone). The process is
// killed by its PID when the test ends. Without nginx the test is skipped
// with a message saying so.
package nginxtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Server is one nginx started by a test.
type Server struct {
	URL     string // http://127.0.0.1:PORT/
	Reports string // POST /report bodies, one per line
	PID     int
	ErrLog  string
}

// Start runs nginx with root as its document root and the given number of
// worker processes.
func Start(t testing.TB, root string, workers int) *Server {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nginx"); serr != nil {
			t.Skip("nginx not installed (make deps installs Debian's nginx); skipping the channel server tests")
		}
		bin = "/usr/sbin/nginx"
	}
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	mustT(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	user := ""
	if os.Geteuid() == 0 {
		user = "user root root;" // workers must read the test's 0700 temp dirs
	}
	n := &Server{URL: fmt.Sprintf("http://127.0.0.1:%d/", port), Reports: filepath.Join(dir, "reports.jsonl"), ErrLog: filepath.Join(dir, "error.log")}
	conf := fmt.Sprintf(`daemon off;
%s
worker_processes %d;
pid %s/nginx.pid;
error_log %s warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[3]s/body; proxy_temp_path %[3]s/proxy; fastcgi_temp_path %[3]s/fcgi;
  uwsgi_temp_path %[3]s/uwsgi; scgi_temp_path %[3]s/scgi;
  types { application/octet-stream otab; text/plain json; }
  keepalive_requests 100000;
  log_format reports escape=none '$request_body';
  server {
    listen 127.0.0.1:%[5]d backlog=4096;
    root %[6]s;
    location = /report {
      access_log %[7]s reports;
      client_body_buffer_size 64k;
      proxy_pass http://127.0.0.1:%[5]d/sink;
    }
    location = /sink { return 204; }
  }
}
`, user, workers, dir, n.ErrLog, port, root, n.Reports)
	mustT(t, os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644))
	cmd := exec.Command(bin, "-c", filepath.Join(dir, "nginx.conf"), "-p", dir, "-e", n.ErrLog)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	mustT(t, cmd.Start())
	n.PID = cmd.Process.Pid
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(n.PID, syscall.SIGQUIT) // graceful: flushes the report log
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			syscall.Kill(n.PID, syscall.SIGKILL)
			<-done
		}
	})
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-done:
			b, _ := os.ReadFile(n.ErrLog)
			t.Fatalf("nginx exited: %s %s", stderr.String(), b)
		case <-time.After(20 * time.Millisecond):
		}
		if i > 500 {
			t.Fatal("nginx did not listen within 10 s")
		}
	}
	return n
}

// WaitReports waits until nginx logged at least n report bodies (it writes
// its log after the client has the answer) and returns them all.
func (n *Server) WaitReports(t testing.TB, want int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		lines := n.ReportLines(t)
		if len(lines) >= want || time.Now().After(deadline) {
			return lines
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ReportLines returns the report bodies nginx logged.
func (n *Server) ReportLines(t testing.TB) []string {
	t.Helper()
	b, err := os.ReadFile(n.Reports)
	if os.IsNotExist(err) {
		return nil
	}
	mustT(t, err)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

func mustT(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
