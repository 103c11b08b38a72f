// Package dditest is a DDI server for tests: the device-facing part of
// Eclipse hawkBit (docs/direct-device-integration-api.md, the
// hawkbit-ddi-api JSON model) for one tenant and one controller, on a
// loopback httptest server. A real hawkBit (Java) cannot run in the test
// tree; this follows the published API closely enough that the client
// cannot tell:
//
//   - GET  /{tenant}/controller/v1/{id}: config.polling.sleep and _links
//     (deploymentBase with a ?c= that changes per action, cancelAction
//     while a cancel is pending, configData until attributes arrived or
//     when asked again); a strong ETag, 304 on If-None-Match.
//   - GET  .../deploymentBase/{action}, POST .../deploymentBase/{action}/feedback
//   - GET  .../cancelAction/{id},      POST .../cancelAction/{id}/feedback
//   - PUT  .../configData
//   - GET  .../softwaremodules/{m}/artifacts/{file}: Range (206) and ETag.
//
// Feedback on an action that is no longer active (closed, canceled)
// answers 410 Gone and is not recorded, as hawkBit does. Every accepted
// feedback is recorded in order. Authorization must be "TargetToken
// <Token>" (or GatewayToken) when Token is set; every request's
// Authorization header is logged per origin so tests can prove where the
// token went. Simplifications, documented where they matter: a rejected
// cancel ends the cancel request and the action continues; no rollout
// groups.
package dditest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Feedback is one recorded feedback message.
type Feedback struct {
	Action    string // the deployment action id
	Cancel    string // the cancel action id, for cancel feedback
	Execution string
	Finished  string
	Progress  string // "cnt/of" or ""
	Details   []string
}

// String is one line: action kind execution/finished progress details.
func (f Feedback) String() string {
	s := "action " + f.Action + ": "
	if f.Cancel != "" {
		s = "cancel " + f.Cancel + " of action " + f.Action + ": "
	}
	s += f.Execution + "/" + f.Finished
	if f.Progress != "" {
		s += " " + f.Progress
	}
	if len(f.Details) > 0 {
		s += " " + strings.Join(f.Details, "; ")
	}
	return s
}

// Final reports whether f ends its action.
func (f Feedback) Final() bool { return f.Execution == "closed" }

// Request is one request the server saw.
type Request struct {
	Method, Path, Auth string
}

// File is an artifact.
type File struct {
	Name string
	Data []byte
}

// Action is one deployment.
type Action struct {
	ID                string
	Download, Update  string // handling: skip|attempt|forced
	MaintenanceWindow string // "", available, unavailable
	Part, Version     string
	Files             []File
	// state
	active   bool
	canceled bool
	closed   string // finished value of the closing feedback
}

type cancelReq struct {
	id, stop string
}

// Server is the DDI test server. Fields may be changed under Lock.
type Server struct {
	*httptest.Server
	Tenant, Controller string
	Token              string
	// Sleep is config.polling.sleep.
	Sleep string
	// ArtifactStatus, when set for a file name, is answered instead of it.
	ArtifactStatus map[string]int
	// Redirect, when set for a file name, answers 302 to that URL.
	Redirect map[string]string
	// CutAfter: artifact responses stop after this many bytes (0: never),
	// closing the connection, to make the client resume.
	CutAfter int64
	// FeedbackStatus, when set for an execution ("closed", ...), is
	// answered to such deployment feedback instead of recording it.
	FeedbackStatus map[string]int
	// OnFeedback runs after a feedback was recorded, with the count so
	// far; returning true drops the connection without an answer (the
	// device dies before it learns the result).
	OnFeedback func(n int, f Feedback) bool

	mu        sync.Mutex
	actions   []*Action
	cancels   []cancelReq
	feedback  []Feedback
	config    []map[string]string
	askConfig bool
	requests  []Request
	notMod    int
	gone      int
	nextID    int
}

// New starts a server on 127.0.0.1.
func New(t testing.TB, tenant, controller, token string) *Server {
	s := &Server{Tenant: tenant, Controller: controller, Token: token, Sleep: "00:05:00",
		ArtifactStatus: map[string]int{}, Redirect: map[string]string{}, FeedbackStatus: map[string]int{}, askConfig: true, nextID: 100}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// Lock runs fn with the server's state locked (to change its fields).
func (s *Server) Lock(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn()
}

// Deploy creates an active action and returns its id.
func (s *Server) Deploy(a Action) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	a.ID = strconv.Itoa(s.nextID)
	if a.Download == "" {
		a.Download = "forced"
	}
	if a.Update == "" {
		a.Update = "forced"
	}
	if a.Part == "" {
		a.Part = "os"
	}
	a.active = true
	s.actions = append(s.actions, &a)
	return a.ID
}

// SetWindow changes an action's maintenance window.
func (s *Server) SetWindow(id, window string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.action(id); a != nil {
		a.MaintenanceWindow = window
	}
}

// Cancel asks the device to cancel action id (a cancelAction link).
func (s *Server) Cancel(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	cid := strconv.Itoa(s.nextID)
	s.cancels = append(s.cancels, cancelReq{id: cid, stop: id})
	return cid
}

// AskConfig makes the next polls offer the configData link.
func (s *Server) AskConfig() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.askConfig = true
}

// Feedback returns every recorded feedback in order.
func (s *Server) Feedback() []Feedback {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Feedback(nil), s.feedback...)
}

// Finals returns the recorded final feedback for action id.
func (s *Server) Finals(id string) []Feedback {
	var out []Feedback
	for _, f := range s.Feedback() {
		if f.Action == id && f.Final() {
			out = append(out, f)
		}
	}
	return out
}

// ConfigData returns every configData body received.
func (s *Server) ConfigData() []map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]string(nil), s.config...)
}

// Requests returns every request seen.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// NotModified counts polls answered 304.
func (s *Server) NotModified() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.notMod
}

// Gone counts feedback answered 410 (action no longer active).
func (s *Server) Gone() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gone
}

// Base is the controller base URL.
func (s *Server) Base() string {
	return s.URL + "/" + s.Tenant + "/controller/v1/" + s.Controller
}

func (s *Server) action(id string) *Action {
	for _, a := range s.actions {
		if a.ID == id {
			return a
		}
	}
	return nil
}

func (s *Server) current() *Action {
	for _, a := range s.actions {
		if a.active {
			return a
		}
	}
	return nil
}

func (s *Server) authorized(r *http.Request) bool {
	if s.Token == "" {
		return true
	}
	h := r.Header.Get("Authorization")
	return h == "TargetToken "+s.Token || h == "GatewayToken "+s.Token
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, Auth: r.Header.Get("Authorization")})
	prefix := "/" + s.Tenant + "/controller/v1/" + s.Controller
	rest, ok := strings.CutPrefix(r.URL.Path, prefix)
	if !ok {
		http.NotFound(w, r)
		return
	}
	if !s.authorized(r) {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	parts := strings.Split(strings.Trim(rest, "/"), "/")
	switch {
	case rest == "" || rest == "/":
		s.serveBase(w, r)
	case len(parts) == 2 && parts[0] == "deploymentBase" && r.Method == http.MethodGet:
		s.serveDeployment(w, parts[1])
	case len(parts) == 3 && parts[0] == "deploymentBase" && parts[2] == "feedback" && r.Method == http.MethodPost:
		s.deploymentFeedback(w, r, parts[1])
	case len(parts) == 2 && parts[0] == "cancelAction" && r.Method == http.MethodGet:
		s.serveCancel(w, parts[1])
	case len(parts) == 3 && parts[0] == "cancelAction" && parts[2] == "feedback" && r.Method == http.MethodPost:
		s.cancelFeedback(w, r, parts[1])
	case len(parts) == 1 && parts[0] == "configData" && r.Method == http.MethodPut:
		var cd struct {
			Mode string            `json:"mode"`
			Data map[string]string `json:"data"`
		}
		if json.NewDecoder(r.Body).Decode(&cd) != nil || len(cd.Data) == 0 {
			http.Error(w, "bad configData", http.StatusBadRequest)
			return
		}
		s.config = append(s.config, cd.Data)
		s.askConfig = false
	case len(parts) == 4 && parts[0] == "softwaremodules" && parts[2] == "artifacts" && r.Method == http.MethodGet:
		s.serveArtifact(w, r, parts[3])
	default:
		http.NotFound(w, r)
	}
}

func (s *Server) link(path string) map[string]string {
	return map[string]string{"href": s.Base() + path}
}

func (s *Server) serveBase(w http.ResponseWriter, r *http.Request) {
	links := map[string]any{}
	if len(s.cancels) > 0 {
		c := s.cancels[0]
		links["cancelAction"] = s.link("/cancelAction/" + c.id)
	} else if a := s.current(); a != nil {
		links["deploymentBase"] = s.link("/deploymentBase/" + a.ID + "?c=" + strconv.Itoa(len(a.ID)*7919+len(s.feedback)%2))
	}
	if s.askConfig {
		links["configData"] = s.link("/configData")
	}
	body, _ := json.Marshal(map[string]any{
		"config": map[string]any{"polling": map[string]string{"sleep": s.Sleep}},
		"_links": links,
	})
	etag := fmt.Sprintf(`"%x"`, hash(body))
	w.Header().Set("ETag", etag)
	if r.Header.Get("If-None-Match") == etag {
		s.notMod++
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/hal+json")
	w.Write(body)
}

func hash(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h = (h ^ uint64(c)) * 1099511628211
	}
	return h
}

func (s *Server) serveDeployment(w http.ResponseWriter, id string) {
	a := s.action(id)
	if a == nil {
		http.NotFound(w, nil)
		return
	}
	var arts []map[string]any
	for _, f := range a.Files {
		href := s.Base() + "/softwaremodules/7/artifacts/" + f.Name
		arts = append(arts, map[string]any{
			"filename": f.Name, "size": len(f.Data),
			"hashes": map[string]string{"sha256": sha256hex(f.Data), "sha1": sha1hex(f.Data), "md5": md5hex(f.Data)},
			"_links": map[string]any{"download-http": map[string]string{"href": href}, "md5sum-http": map[string]string{"href": href + ".MD5SUM"}},
		})
	}
	dep := map[string]any{"download": a.Download, "update": a.Update,
		"chunks": []map[string]any{{"part": a.Part, "version": a.Version, "name": "rootfs", "artifacts": arts}}}
	if a.MaintenanceWindow != "" {
		dep["maintenanceWindow"] = a.MaintenanceWindow
	}
	w.Header().Set("Content-Type", "application/hal+json")
	json.NewEncoder(w).Encode(map[string]any{"id": a.ID, "deployment": dep})
}

type feedbackBody struct {
	Status struct {
		Execution string `json:"execution"`
		Result    struct {
			Finished string `json:"finished"`
			Progress *struct {
				Cnt int `json:"cnt"`
				Of  int `json:"of"`
			} `json:"progress"`
		} `json:"result"`
		Details []string `json:"details"`
	} `json:"status"`
}

var executions = map[string]bool{"closed": true, "proceeding": true, "canceled": true, "scheduled": true,
	"rejected": true, "resumed": true, "downloaded": true, "download": true}

func parseFeedback(r *http.Request) (Feedback, bool) {
	var fb feedbackBody
	if json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&fb) != nil || !executions[fb.Status.Execution] {
		return Feedback{}, false
	}
	switch fb.Status.Result.Finished {
	case "success", "failure", "none":
	default:
		return Feedback{}, false
	}
	f := Feedback{Execution: fb.Status.Execution, Finished: fb.Status.Result.Finished, Details: fb.Status.Details}
	if p := fb.Status.Result.Progress; p != nil {
		f.Progress = fmt.Sprintf("%d/%d", p.Cnt, p.Of)
	}
	return f, true
}

// record appends f and runs the hook; false: drop the connection.
func (s *Server) record(w http.ResponseWriter, f Feedback) bool {
	s.feedback = append(s.feedback, f)
	if s.OnFeedback != nil && s.OnFeedback(len(s.feedback), f) {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
			}
		}
		return false
	}
	return true
}

func (s *Server) deploymentFeedback(w http.ResponseWriter, r *http.Request, id string) {
	a := s.action(id)
	if a == nil {
		http.NotFound(w, r)
		return
	}
	f, ok := parseFeedback(r)
	if !ok {
		http.Error(w, "bad feedback", http.StatusBadRequest)
		return
	}
	if !a.active {
		s.gone++
		http.Error(w, "action is not active", http.StatusGone)
		return
	}
	if code := s.FeedbackStatus[f.Execution]; code != 0 {
		http.Error(w, http.StatusText(code), code)
		return
	}
	f.Action = id
	if f.Execution == "closed" {
		a.active, a.closed = false, f.Finished
	}
	s.record(w, f)
}

func (s *Server) serveCancel(w http.ResponseWriter, id string) {
	for _, c := range s.cancels {
		if c.id == id {
			w.Header().Set("Content-Type", "application/hal+json")
			json.NewEncoder(w).Encode(map[string]any{"id": c.id, "cancelAction": map[string]string{"stopId": c.stop}})
			return
		}
	}
	http.NotFound(w, nil)
}

func (s *Server) cancelFeedback(w http.ResponseWriter, r *http.Request, id string) {
	idx := -1
	for i, c := range s.cancels {
		if c.id == id {
			idx = i
		}
	}
	f, ok := parseFeedback(r)
	if !ok {
		http.Error(w, "bad feedback", http.StatusBadRequest)
		return
	}
	if idx < 0 {
		s.gone++
		http.Error(w, "cancel is not active", http.StatusGone)
		return
	}
	c := s.cancels[idx]
	f.Action, f.Cancel = c.stop, id
	switch f.Execution {
	case "closed":
		// Accepted: the action ends canceled.
		if a := s.action(c.stop); a != nil {
			a.active, a.canceled = false, true
		}
		s.cancels = append(s.cancels[:idx], s.cancels[idx+1:]...)
	case "rejected":
		s.cancels = append(s.cancels[:idx], s.cancels[idx+1:]...)
	}
	s.record(w, f)
}

func (s *Server) serveArtifact(w http.ResponseWriter, r *http.Request, name string) {
	if code := s.ArtifactStatus[name]; code != 0 {
		http.Error(w, http.StatusText(code), code)
		return
	}
	if to := s.Redirect[name]; to != "" {
		http.Redirect(w, r, to, http.StatusFound)
		return
	}
	var data []byte
	found := false
	for _, a := range s.actions {
		for _, f := range a.Files {
			if f.Name == name {
				data, found = f.Data, true
			}
		}
	}
	if !found {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("ETag", `"`+sha256hex(data)+`"`)
	w.Header().Set("Content-Type", "application/octet-stream")
	var ww http.ResponseWriter = w
	if s.CutAfter > 0 {
		ww = &cutWriter{ResponseWriter: w, left: s.CutAfter}
	}
	// ServeContent handles Range, If-Range and 206; the lock is released
	// for the body so a slow reader does not stall the poll.
	s.mu.Unlock()
	defer s.mu.Lock()
	http.ServeContent(ww, r, name, time.Unix(1700000000, 0), bytes.NewReader(data))
}

// cutWriter drops the connection after left bytes of body.
type cutWriter struct {
	http.ResponseWriter
	left int64
}

func (c *cutWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > c.left {
		n, _ := c.ResponseWriter.Write(p[:c.left])
		c.left = 0
		if f, ok := c.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		if hj, ok := c.ResponseWriter.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
			}
		}
		return n, net.ErrClosed
	}
	c.left -= int64(len(p))
	return c.ResponseWriter.Write(p)
}
