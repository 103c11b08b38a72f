package hawkbit

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The DDI JSON documents otad reads and writes, as the hawkBit DDI API
// (hawkbit-ddi-api, docs/direct-device-integration-api.md) defines them.
// Unknown fields are ignored, like the server does.

// Link is a HAL link.
type Link struct {
	Href string `json:"href"`
}

// ControllerBase is the answer to the poll (GET {base}).
type ControllerBase struct {
	Config struct {
		Polling struct {
			Sleep string `json:"sleep"`
		} `json:"polling"`
	} `json:"config"`
	Links map[string]Link `json:"_links"`
}

// Link names in ControllerBase.Links.
const (
	LinkDeployment   = "deploymentBase"
	LinkCancel       = "cancelAction"
	LinkConfigData   = "configData"
	LinkInstalled    = "installedBase"
	LinkConfirmation = "confirmationBase"
)

// Handling types of deployment.download and deployment.update.
const (
	HandlingSkip    = "skip"
	HandlingAttempt = "attempt"
	HandlingForced  = "forced"
)

// Maintenance window states.
const (
	WindowAvailable   = "available"
	WindowUnavailable = "unavailable"
)

// DeploymentBase is GET {base}/deploymentBase/{actionId}.
type DeploymentBase struct {
	ID         string     `json:"id"`
	Deployment Deployment `json:"deployment"`
}

// Deployment says what to install and how.
type Deployment struct {
	Download          string  `json:"download"`
	Update            string  `json:"update"`
	MaintenanceWindow string  `json:"maintenanceWindow,omitempty"`
	Chunks            []Chunk `json:"chunks"`
}

// Chunk is one software module of the distribution set.
type Chunk struct {
	Part      string     `json:"part"`
	Version   string     `json:"version"`
	Name      string     `json:"name"`
	Artifacts []Artifact `json:"artifacts"`
}

// Artifact is one file of a chunk.
type Artifact struct {
	Filename string          `json:"filename"`
	Size     int64           `json:"size"`
	Hashes   Hashes          `json:"hashes"`
	Links    map[string]Link `json:"_links"`
}

// Hashes of an artifact (hex).
type Hashes struct {
	SHA1   string `json:"sha1,omitempty"`
	MD5    string `json:"md5,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
}

// CancelAction is GET {base}/cancelAction/{id}.
type CancelAction struct {
	ID           string `json:"id"`
	CancelAction struct {
		StopID string `json:"stopId"`
	} `json:"cancelAction"`
}

// Execution values of a feedback status.
const (
	ExecClosed     = "closed"
	ExecProceeding = "proceeding"
	ExecCanceled   = "canceled"
	ExecScheduled  = "scheduled"
	ExecRejected   = "rejected"
	ExecResumed    = "resumed"
	ExecDownloaded = "downloaded"
	ExecDownload   = "download"
)

// Finished values of a feedback result.
const (
	FinishedSuccess = "success"
	FinishedFailure = "failure"
	FinishedNone    = "none"
)

// Feedback is the body of POST .../feedback. Time is sent in the current
// form; Timestamp (epoch milliseconds) for servers that read that one
// instead. Both are optional for the server.
type Feedback struct {
	Time      string `json:"time,omitempty"`
	Timestamp int64  `json:"timestamp,omitempty"`
	Status    Status `json:"status"`
}

// Status of an action as the device reports it.
type Status struct {
	Execution string   `json:"execution"`
	Result    Result   `json:"result"`
	Code      *int     `json:"code,omitempty"`
	Details   []string `json:"details,omitempty"`
}

// Result of an action.
type Result struct {
	Finished string    `json:"finished"`
	Progress *Progress `json:"progress,omitempty"`
}

// Progress is cnt of of.
type Progress struct {
	Cnt int `json:"cnt"`
	Of  int `json:"of"`
}

// ConfigData is the body of PUT {base}/configData.
type ConfigData struct {
	Mode string            `json:"mode"`
	Data map[string]string `json:"data"`
}

var errSleep = errors.New("hawkbit: bad polling sleep")

// maxSleepHours bounds the hours field (poll-max clamps it anyway).
const maxSleepHours = 9999

// ParseSleep parses config.polling.sleep, "HH:MM:SS".
func ParseSleep(s string) (time.Duration, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return 0, fmt.Errorf("%w %q", errSleep, s)
	}
	var d time.Duration
	for i, unit := range []time.Duration{time.Hour, time.Minute, time.Second} {
		n, err := strconv.Atoi(parts[i])
		if err != nil || n < 0 || (i > 0 && n > 59) || (i == 0 && n > maxSleepHours) {
			return 0, fmt.Errorf("%w %q", errSleep, s)
		}
		d += time.Duration(n) * unit
	}
	return d, nil
}
