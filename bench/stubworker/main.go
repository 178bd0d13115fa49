// Command stubworker stands in for kubesessions-worker in benchmarks that need many idle
// sessions (bench/idle_cost.py). It is never a worker for real use: it runs no app and has
// no POST /run.
//
// It keeps the part of docs/worker-contract.md that the operator relies on for an idle
// session, with the real worker's answers (worker-image/kubesessions_worker/http.py): the
// same environment (less the settings of calls: KUBESESSIONS_CONFIG, _QUEUE_SIZE and
// _CALL_TIMEOUT), bearer-token check and problem+json errors; GET /healthz, /readyz and
// /status; POST /keepalive, /close and /close?ifIdleFor=<s> (409 with remainingSeconds);
// the termination message; exit on close, on SIGTERM, or when idle past timeout + grace.
// It is ready as soon as it listens: there is no setup to wait for.
package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	stateReady   = "READY"
	stateClosing = "CLOSING"
)

type settings struct {
	sessionID, token, host, port, terminationPath string
	timeout                                       int
	idleGrace                                     float64
}

func env(name, fallback string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return fallback
}

func loadSettings() (settings, error) {
	s := settings{
		sessionID:       os.Getenv("SESSION_ID"),
		token:           os.Getenv("KUBESESSIONS_SESSION_TOKEN"),
		host:            env("POD_IP", ""),
		port:            env("KUBESESSIONS_PORT", "8080"),
		terminationPath: env("KUBESESSIONS_TERMINATION_MESSAGE_PATH", "/dev/termination-log"),
	}
	if s.host == "" {
		s.host = "0.0.0.0"
	}
	var missing []string
	for _, kv := range [][2]string{{"SESSION_ID", s.sessionID}, {"KUBESESSIONS_APP", os.Getenv("KUBESESSIONS_APP")}, {"KUBESESSIONS_SESSION_TOKEN", s.token}} {
		if kv[1] == "" {
			missing = append(missing, kv[0])
		}
	}
	if len(missing) > 0 {
		return s, fmt.Errorf("required setting(s) missing: %s", strings.Join(missing, ", "))
	}
	timeout, err := strconv.Atoi(strings.TrimSpace(env("SESSION_TIMEOUT", "60")))
	if err != nil {
		return s, fmt.Errorf("SESSION_TIMEOUT must be a number, got '%s'", os.Getenv("SESSION_TIMEOUT"))
	}
	if timeout < 1 || timeout > 3600 {
		return s, fmt.Errorf("SESSION_TIMEOUT must be 1..3600 seconds, got %d", timeout)
	}
	s.timeout = timeout
	grace, err := strconv.ParseFloat(strings.TrimSpace(env("KUBESESSIONS_IDLE_GRACE", "60")), 64)
	if err != nil || !(grace >= 0) {
		return s, fmt.Errorf("KUBESESSIONS_IDLE_GRACE must be a number >= 0, got '%s'", os.Getenv("KUBESESSIONS_IDLE_GRACE"))
	}
	s.idleGrace = grace
	return s, nil
}

// session is the runner's state machine cut down to an app that is never called:
// READY from the start, CLOSING once an ending is chosen (the first one wins).
type session struct {
	mu       sync.Mutex
	id       string
	timeout  int
	started  time.Time
	activity time.Time // carries Go's monotonic reading, so idleness ignores wall-clock steps
	state    string
	ending   chan ending
}

type ending struct{ reason, message string }

func (s *session) idleSeconds() float64 {
	return max(0, time.Since(s.activity).Seconds())
}

// stop chooses how the session ends; the caller holds s.mu.
func (s *session) stop(reason, message string) {
	if s.state == stateClosing {
		return
	}
	log.Printf("session ending: %s (%s)", reason, message)
	s.state = stateClosing
	s.ending <- ending{reason, message}
}

// rfc3339 is the worker's timestamp format: UTC, milliseconds, "Z".
func rfc3339(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

// round3 matches the worker's round(x, 3).
func round3(x float64) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(x, 'f', 3, 64), 64)
	return v
}

// reply answers JSON; bodies with several members are structs, not maps, so that the
// members come out in the worker's order.
func reply(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func problem(w http.ResponseWriter, status int, code, detail string) {
	if code == "UNAUTHORIZED" {
		w.Header().Set("WWW-Authenticate", "Bearer")
	}
	w.Header().Set("Content-Type", "application/problem+json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Type   string `json:"type"`
		Title  string `json:"title"`
		Status int    `json:"status"`
		Code   string `json:"code"`
		Detail string `json:"detail"`
	}{"about:blank", http.StatusText(status), status, code, detail})
}

// authorized wraps every route but the probes, as the worker's auth middleware does
// (unknown paths and wrong methods included).
func authorized(token []byte, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" && r.URL.Path != "/readyz" {
			scheme, given, _ := strings.Cut(r.Header.Get("Authorization"), " ")
			// Constant time: the time taken must not reveal how much of the token matched.
			if !strings.EqualFold(scheme, "bearer") || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(given)), token) != 1 {
				problem(w, http.StatusUnauthorized, "UNAUTHORIZED", "a valid 'Authorization: Bearer <session token>' header is required")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func routes(s *session) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		reply(w, http.StatusOK, map[string]any{"state": s.state})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		ready := s.state == stateReady
		status := http.StatusServiceUnavailable
		if ready {
			status = http.StatusOK
		}
		reply(w, status, struct {
			State string `json:"state"`
			Ready bool   `json:"ready"`
		}{s.state, ready})
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		reply(w, http.StatusOK, struct {
			State          string         `json:"state"`
			SessionID      string         `json:"sessionId"`
			LastActivity   string         `json:"lastActivity"`
			IdleSeconds    float64        `json:"idleSeconds"`
			InFlight       int            `json:"inFlight"`
			Queued         int            `json:"queued"`
			Calls          int            `json:"calls"`
			UptimeSeconds  float64        `json:"uptimeSeconds"`
			SessionTimeout int            `json:"sessionTimeout"`
			GPU            map[string]any `json:"gpu"`
		}{
			s.state, s.id, rfc3339(s.activity), round3(s.idleSeconds()), 0, 0, 0,
			round3(time.Since(s.started).Seconds()), s.timeout,
			map[string]any{"available": false, "reason": "stub worker: no GPU telemetry", "devices": []any{}},
		})
	})
	mux.HandleFunc("POST /keepalive", func(w http.ResponseWriter, _ *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.state != stateReady {
			problem(w, http.StatusGone, "SESSION_ENDED", "the session is ending")
			return
		}
		s.activity = time.Now()
		reply(w, http.StatusOK, map[string]any{"lastActivity": rfc3339(s.activity)})
	})
	mux.HandleFunc("POST /close", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if !r.URL.Query().Has("ifIdleFor") {
			s.stop("Closed", "POST /close")
			reply(w, http.StatusAccepted, map[string]any{"state": stateClosing})
			return
		}
		raw := r.URL.Query().Get("ifIdleFor")
		seconds, err := strconv.ParseFloat(strings.TrimSpace(raw), 64)
		if err != nil || !(seconds > 0 && seconds <= 86400) {
			problem(w, http.StatusBadRequest, "VALIDATION", fmt.Sprintf("ifIdleFor must be a number of seconds in (0, 86400], got '%s'", raw))
			return
		}
		// Decided and done under one lock, so a keepalive meanwhile either lands first
		// (and the close is refused) or finds the session closing.
		idle, remaining := s.idleSeconds(), seconds
		if s.state == stateReady {
			if idle >= seconds {
				s.stop("IdleTimeout", fmt.Sprintf("idle for %.1fs (timeout %ss)", idle, strconv.FormatFloat(seconds, 'g', -1, 64)))
				reply(w, http.StatusAccepted, map[string]any{"state": stateClosing})
				return
			}
			remaining = seconds - idle
		}
		reply(w, http.StatusConflict, struct {
			State            string  `json:"state"`
			IdleSeconds      float64 `json:"idleSeconds"`
			RemainingSeconds float64 `json:"remainingSeconds"`
		}{s.state, round3(idle), round3(remaining)})
	})
	return mux
}

// forgotten ends the session when idle past timeout + grace: the worker's safety net for an
// operator that is down.
func forgotten(s *session, window float64) {
	for {
		s.mu.Lock()
		left := window - s.idleSeconds()
		if left <= 0 {
			s.stop("IdleTimeout", fmt.Sprintf("idle for more than %ss (session timeout plus grace)", strconv.FormatFloat(window, 'g', -1, 64)))
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		time.Sleep(time.Duration(left * float64(time.Second)))
	}
}

// terminate writes the one JSON line the operator reads from the container status, then
// exits. sessionID is nil when the settings could not be read (the worker writes null too).
func terminate(path string, sessionID *string, e ending, code int) {
	line, _ := json.Marshal(struct {
		Reason    string  `json:"reason"`
		Message   string  `json:"message"`
		SessionID *string `json:"sessionId"`
	}{e.reason, e.message, sessionID})
	if err := os.WriteFile(path, append(line, '\n'), 0o644); err != nil {
		log.Printf("could not write the termination message to %s: %v", path, err)
	}
	log.Printf("exiting with code %d: %s", code, e.reason)
	os.Exit(code)
}

func main() {
	// A thousand of these share two cores: one P keeps each to a few threads.
	runtime.GOMAXPROCS(1)
	log.SetFlags(log.LstdFlags | log.Lmicroseconds | log.LUTC)
	cfg, err := loadSettings()
	if err != nil {
		log.Printf("stubworker: %v", err)
		terminate(cfg.terminationPath, nil, ending{"SetupFailed", err.Error()}, 1)
	}
	now := time.Now()
	s := &session{id: cfg.sessionID, timeout: cfg.timeout, started: now, activity: now, state: stateReady, ending: make(chan ending, 1)}
	addr := net.JoinHostPort(cfg.host, cfg.port)
	listener, err := net.Listen("tcp", addr)
	if err != nil {
		terminate(cfg.terminationPath, &cfg.sessionID, ending{"SetupFailed", fmt.Sprintf("cannot listen on %s: %v", addr, err)}, 1)
	}
	server := &http.Server{Handler: authorized([]byte(cfg.token), routes(s)), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := server.Serve(listener); !errors.Is(err, http.ErrServerClosed) {
			log.Fatalf("serving: %v", err)
		}
	}()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		sig := <-signals
		s.mu.Lock()
		s.stop("Terminated", map[os.Signal]string{syscall.SIGTERM: "SIGTERM", syscall.SIGINT: "SIGINT"}[sig])
		s.mu.Unlock()
	}()
	go forgotten(s, float64(cfg.timeout)+cfg.idleGrace)
	log.Printf("listening on http://%s", listener.Addr())
	e := <-s.ending
	// The 202 that asked for the close is still being written: let it go out first.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = server.Shutdown(ctx)
	cancel()
	terminate(cfg.terminationPath, &cfg.sessionID, e, 0)
}
