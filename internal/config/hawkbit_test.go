package config

import (
	"os"
	"strings"
	"testing"
	"time"
)

func parseWith(t *testing.T, extra string) (*Config, error) {
	t.Helper()
	base, err := os.ReadFile("testdata/minimal.conf")
	if err != nil {
		t.Fatal(err)
	}
	return Parse(strings.NewReader(string(base)+"\n"+extra), "test.conf")
}

func TestHawkbitOffByDefault(t *testing.T) {
	c, err := parseWith(t, "")
	if err != nil || c.Hawkbit.Enabled() {
		t.Fatalf("%+v %v", c.Hawkbit, err)
	}
}

func TestHawkbitKeysAndDefaults(t *testing.T) {
	c, err := parseWith(t, `[hawkbit]
server = https://hawkbit.example.com:8443/ddi
# the README's style: comments on their own lines
controller-id = gw-0017
token-file = /etc/otad/hawkbit.token
attribute = site=lab 3
attribute = hw_rev = 2
`)
	if err != nil {
		t.Fatal(err)
	}
	h := c.Hawkbit
	if !h.Enabled() || h.Tenant != "DEFAULT" || h.TokenType != "target" || h.PollMin != 10*time.Second ||
		h.PollMax != time.Hour || h.MaxResumes != 5 || h.Part != "os" || h.ControllerID != "gw-0017" ||
		len(h.Attributes) != 2 || h.Attributes[0] != [2]string{"site", "lab 3"} || h.Attributes[1] != [2]string{"hw_rev", "2"} {
		t.Fatalf("%+v", h)
	}
	c, err = parseWith(t, `[hawkbit]
server = http://127.0.0.1:8080
tenant = ACME
token-type = gateway
poll-min = 1m
poll-max = 2h
max-resumes = 0
part = rootfs
`)
	if err != nil {
		t.Fatal(err)
	}
	if h := c.Hawkbit; h.Tenant != "ACME" || h.TokenType != "gateway" || h.PollMin != time.Minute || h.PollMax != 2*time.Hour || h.MaxResumes != 0 || h.Part != "rootfs" {
		t.Fatalf("%+v", h)
	}
}

func TestHawkbitRefused(t *testing.T) {
	for conf, want := range map[string]string{
		"[hawkbit]\ntenant = X\n":                                       "needs server",
		"[hawkbit]\nserver = ftp://h\n":                                 "http",
		"[hawkbit]\nserver = https://user:pw@h/\n":                      "userinfo",
		"[hawkbit]\nserver = https://h/?token=x\n":                      "query",
		"[hawkbit]\nserver = https://h\ntoken-type = bearer\n":          "target or gateway",
		"[hawkbit]\nserver = https://h\ntoken-file = rel/tok\n":         "absolute",
		"[hawkbit]\nserver = https://h\ncontroller-id = a/b\n":          "without",
		"[hawkbit]\nserver = https://h\npoll-min = 2h\npoll-max = 1h\n": "below poll-min",
		"[hawkbit]\nserver = https://h\npoll-min = 0s\n":                "positive",
		"[hawkbit]\nserver = https://h\nattribute = version=9\n":        "reported by otad",
		"[hawkbit]\nserver = https://h\nattribute = novalue\n":          "NAME=VALUE",
		"[hawkbit]\nserver = https://h\nmax-resumes = -1\n":             "",
		"[hawkbit]\nserver = https://h\nserver = https://i\n":           "repeated",
		"[hawkbit]\nserver = https://h\nurl = https://i\n":              "unknown key",
	} {
		_, err := parseWith(t, conf)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v (want %q)", conf, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "pw@") || err != nil && strings.Contains(err.Error(), "token=x") {
			t.Errorf("error repeats a secret: %v", err)
		}
	}
}
