package config

import (
	"strings"
	"testing"
	"time"
)

const channelBase = `[system]
compatible = gw
[slot.rootfs.0]
name = A
device = /dev/a
[slot.rootfs.1]
name = B
device = /dev/b
`

func TestChannelSection(t *testing.T) {
	c, err := Parse(strings.NewReader(channelBase), "t.conf")
	if err != nil {
		t.Fatal(err)
	}
	if c.Channel.URL != "" || c.Channel.Interval != time.Hour || c.Channel.Jitter != 10*time.Minute || c.Channel.DeviceIDFile != "/etc/machine-id" {
		t.Fatalf("defaults (channel off): %+v", c.Channel)
	}
	c, err = Parse(strings.NewReader(channelBase+`[channel]
url = https://cdn.example.com/gw/channel.json
interval = 6h
jitter = 30m
report-url = https://reports.example.com/report
device-id-file = /data/device-id
`), "t.conf")
	if err != nil {
		t.Fatal(err)
	}
	want := Channel{URL: "https://cdn.example.com/gw/channel.json", Interval: 6 * time.Hour, Jitter: 30 * time.Minute,
		ReportURL: "https://reports.example.com/report", DeviceIDFile: "/data/device-id"}
	if c.Channel != want {
		t.Fatalf("got %+v", c.Channel)
	}
	for _, bad := range []string{"url = ftp://x/y", "url = /local/path", "report-url = https://user:secret@", "interval = 0s", "device-id-file = rel"} {
		_, err := Parse(strings.NewReader(channelBase+"[channel]\n"+bad+"\n"), "t.conf")
		if err == nil {
			t.Errorf("%q accepted", bad)
		} else if strings.Contains(err.Error(), "secret") {
			t.Errorf("error repeats a credential: %v", err)
		}
	}
}
