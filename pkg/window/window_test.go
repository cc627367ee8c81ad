package window

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // zone data must not depend on the machine running the tests
)

func loadLoc(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatalf("loading time zone: %v", err)
	}
	return loc
}

func mustParse(t testing.TB, spec string, loc *time.Location) Window {
	t.Helper()
	w, err := Parse(spec, loc)
	if err != nil {
		t.Fatalf("Parse(%q): %v", spec, err)
	}
	return w
}

func ts(t testing.TB, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// 2026-01-09 is a Friday. Europe/Berlin: CET (+01:00) in winter, CEST
// (+02:00) from 2026-03-29 01:00Z to 2026-10-25 01:00Z. America/New_York:
// EST (-05:00), EDT (-04:00) from 2026-03-08 07:00Z to 2026-11-01 06:00Z.
func TestContains(t *testing.T) {
	tests := []struct {
		spec, zone, at string
		want           bool
	}{
		// Across midnight: Friday's window runs into Saturday.
		{"Mon-Fri 22:30-01:00", "Europe/Berlin", "2026-01-09T23:00:00+01:00", true},
		{"Mon-Fri 22:30-01:00", "Europe/Berlin", "2026-01-10T00:30:00+01:00", true},
		{"Mon-Fri 22:30-01:00", "Europe/Berlin", "2026-01-10T00:59:59+01:00", true},
		{"Mon-Fri 22:30-01:00", "Europe/Berlin", "2026-01-10T01:00:00+01:00", false},
		{"Mon-Fri 22:30-01:00", "Europe/Berlin", "2026-01-10T22:30:00+01:00", false},
		{"Mon-Fri 22:30-01:00", "Europe/Berlin", "2026-01-11T00:30:00+01:00", false},
		{"Mon-Fri 22:30-01:00", "Europe/Berlin", "2026-01-12T00:30:00+01:00", false},
		{"Mon-Fri 22:30-01:00", "Europe/Berlin", "2026-01-12T22:29:59+01:00", false},
		{"Mon-Fri 22:30-01:00", "Europe/Berlin", "2026-01-12T22:30:00+01:00", true},
		{"Mon-Fri 22:30-01:00", "Europe/Berlin", "2026-01-13T00:59:00+01:00", true},
		// Across the week boundary: Sunday's window runs into Monday.
		{"Sun 23:00-02:00", "Europe/Berlin", "2026-01-12T01:00:00+01:00", true},
		{"Sun 23:00-02:00", "Europe/Berlin", "2026-01-11T22:59:59+01:00", false},
		{"Sun 23:00-02:00", "Europe/Berlin", "2026-01-11T23:00:00+01:00", true},
		{"Sun 23:00-02:00", "Europe/Berlin", "2026-01-12T02:00:00+01:00", false},
		{"Sun 23:00-02:00", "Europe/Berlin", "2026-01-10T01:00:00+01:00", false},
		// Evaluated in the window's location, whatever t's location.
		{"Sat,Sun 02:00-05:00", "Europe/Berlin", "2026-01-10T01:30:00Z", true},
		{"Sat,Sun 02:00-05:00", "Europe/Berlin", "2026-01-10T04:30:00Z", false},
		{"Sat,Sun 02:00-05:00", "America/New_York", "2026-01-10T08:00:00Z", true},
		{"Sat,Sun 02:00-05:00", "Europe/Berlin", "2026-01-09T03:00:00+01:00", false},
		{"Sat 22:00-24:00", "UTC", "2026-01-10T23:59:59Z", true},
		{"Sat 22:00-24:00", "UTC", "2026-01-11T00:00:00Z", false},
		{"daily 03:00-04:00", "UTC", "2026-06-17T03:30:00Z", true},
		{"daily 03:00-04:00", "UTC", "2026-06-17T04:00:00Z", false},
		{"*", "UTC", "2026-06-17T12:34:56Z", true},
		{"*", "Europe/Berlin", "2026-03-29T01:00:00Z", true},
		// Spring forward, Europe/Berlin: 02:00-03:00 does not exist on
		// 2026-03-29, so the window is skipped that day.
		{"Sun 02:00-03:00", "Europe/Berlin", "2026-03-29T00:59:59Z", false},
		{"Sun 02:00-03:00", "Europe/Berlin", "2026-03-29T01:00:00Z", false},
		{"Sun 02:00-03:00", "Europe/Berlin", "2026-03-22T01:00:00Z", true},
		{"Sun 01:30-03:30", "Europe/Berlin", "2026-03-29T00:59:59Z", true},
		{"Sun 01:30-03:30", "Europe/Berlin", "2026-03-29T01:29:59Z", true},
		{"Sun 01:30-03:30", "Europe/Berlin", "2026-03-29T01:30:00Z", false},
		// Fall back, Europe/Berlin: 02:00-03:00 happens twice on
		// 2026-10-25 and the window covers both passes.
		{"Sun 02:00-03:00", "Europe/Berlin", "2026-10-24T23:59:59Z", false},
		{"Sun 02:00-03:00", "Europe/Berlin", "2026-10-25T00:00:00Z", true},
		{"Sun 02:00-03:00", "Europe/Berlin", "2026-10-25T01:00:00Z", true},
		{"Sun 02:00-03:00", "Europe/Berlin", "2026-10-25T01:59:59Z", true},
		{"Sun 02:00-03:00", "Europe/Berlin", "2026-10-25T02:00:00Z", false},
		// Fall back, America/New_York: 01:00-02:00 happens twice on
		// 2026-11-01; a window inside it opens on each pass.
		{"Sun 01:15-01:45", "America/New_York", "2026-11-01T05:15:00Z", true},
		{"Sun 01:15-01:45", "America/New_York", "2026-11-01T05:45:00Z", false},
		{"Sun 01:15-01:45", "America/New_York", "2026-11-01T06:00:00Z", false},
		{"Sun 01:15-01:45", "America/New_York", "2026-11-01T06:15:00Z", true},
		{"Sun 01:15-01:45", "America/New_York", "2026-11-01T06:45:00Z", false},
		// Spring forward, America/New_York: 02:00-03:00 does not exist on
		// 2026-03-08.
		{"Sun 02:00-03:00", "America/New_York", "2026-03-08T06:59:59Z", false},
		{"Sun 02:00-03:00", "America/New_York", "2026-03-08T07:00:00Z", false},
	}
	for _, tt := range tests {
		w := mustParse(t, tt.spec, loadLoc(t, tt.zone))
		if got := w.Contains(ts(t, tt.at)); got != tt.want {
			t.Errorf("Parse(%q) in %s: Contains(%s) = %v, want %v", tt.spec, tt.zone, tt.at, got, tt.want)
		}
	}
}

func TestNext(t *testing.T) {
	tests := []struct {
		name, spec, zone, at string
		start, end           string
	}{
		{"inside after midnight", "Mon-Fri 22:30-01:00", "Europe/Berlin", "2026-01-10T00:30:00+01:00",
			"2026-01-09T22:30:00+01:00", "2026-01-10T01:00:00+01:00"},
		{"before", "Mon-Fri 22:30-01:00", "Europe/Berlin", "2026-01-09T12:00:00+01:00",
			"2026-01-09T22:30:00+01:00", "2026-01-10T01:00:00+01:00"},
		{"at start", "Mon-Fri 22:30-01:00", "Europe/Berlin", "2026-01-09T22:30:00+01:00",
			"2026-01-09T22:30:00+01:00", "2026-01-10T01:00:00+01:00"},
		{"at end, over the weekend", "Mon-Fri 22:30-01:00", "Europe/Berlin", "2026-01-10T01:00:00+01:00",
			"2026-01-12T22:30:00+01:00", "2026-01-13T01:00:00+01:00"},
		{"across week boundary", "Sun 23:00-02:00", "Europe/Berlin", "2026-01-12T01:00:00+01:00",
			"2026-01-11T23:00:00+01:00", "2026-01-12T02:00:00+01:00"},
		{"adjacent rules merge", "Sat 20:00-24:00; Sun 00:00-06:00", "UTC", "2026-01-10T21:00:00Z",
			"2026-01-10T20:00:00Z", "2026-01-11T06:00:00Z"},
		{"overlapping rules merge", "Sat 20:00-02:00; Sat 23:00-03:00", "UTC", "2026-01-10T12:00:00Z",
			"2026-01-10T20:00:00Z", "2026-01-11T03:00:00Z"},
		{"multi-day", "Mon-Sat 00:00-24:00", "UTC", "2026-01-14T12:00:00Z",
			"2026-01-12T00:00:00Z", "2026-01-18T00:00:00Z"},
		{"multi-day from outside", "Mon-Sat 00:00-24:00", "UTC", "2026-01-11T12:00:00Z",
			"2026-01-12T00:00:00Z", "2026-01-18T00:00:00Z"},
		{"half-hour zone", "daily 03:00-04:00", "Asia/Kolkata", "2026-01-10T00:00:00Z",
			"2026-01-10T21:30:00Z", "2026-01-10T22:30:00Z"},

		// Europe/Berlin spring forward, 2026-03-29 01:00Z.
		{"Berlin spring: skipped", "Sun 02:00-03:00", "Europe/Berlin", "2026-03-28T12:00:00Z",
			"2026-04-05T00:00:00Z", "2026-04-05T01:00:00Z"},
		{"Berlin spring: skipped, inner", "Sun 02:15-02:45", "Europe/Berlin", "2026-03-28T12:00:00Z",
			"2026-04-05T00:15:00Z", "2026-04-05T00:45:00Z"},
		{"Berlin spring: 1h", "Sun 01:30-03:30", "Europe/Berlin", "2026-03-29T00:00:00Z",
			"2026-03-29T00:30:00Z", "2026-03-29T01:30:00Z"},
		{"Berlin spring: opens at 03:00", "Sun 02:30-04:00", "Europe/Berlin", "2026-03-28T12:00:00Z",
			"2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z"},
		{"Berlin spring: merged over the gap", "daily 00:00-02:00; daily 03:00-24:00", "Europe/Berlin", "2026-03-29T00:30:00+01:00",
			"2026-03-28T03:00:00+01:00", "2026-03-30T02:00:00+02:00"},
		// Europe/Berlin fall back, 2026-10-25 01:00Z.
		{"Berlin fall: both passes", "Sun 02:00-03:00", "Europe/Berlin", "2026-10-24T12:00:00Z",
			"2026-10-25T00:00:00Z", "2026-10-25T02:00:00Z"},
		{"Berlin fall: inside second pass", "Sun 02:00-03:00", "Europe/Berlin", "2026-10-25T01:30:00Z",
			"2026-10-25T00:00:00Z", "2026-10-25T02:00:00Z"},
		{"Berlin fall: 3h", "Sun 01:30-03:30", "Europe/Berlin", "2026-10-24T20:00:00Z",
			"2026-10-24T23:30:00Z", "2026-10-25T02:30:00Z"},
		// America/New_York spring forward, 2026-03-08 07:00Z.
		{"New York spring: skipped", "Sun 02:00-03:00", "America/New_York", "2026-03-07T12:00:00Z",
			"2026-03-15T06:00:00Z", "2026-03-15T07:00:00Z"},
		{"New York spring: 1h", "Sun 01:30-03:30", "America/New_York", "2026-03-07T12:00:00Z",
			"2026-03-08T06:30:00Z", "2026-03-08T07:30:00Z"},
		// America/New_York fall back, 2026-11-01 06:00Z.
		{"New York fall: both passes", "Sun 01:00-02:00", "America/New_York", "2026-10-31T12:00:00Z",
			"2026-11-01T05:00:00Z", "2026-11-01T07:00:00Z"},
		// The repeated hour 01:00-02:00 straddles the start, so the
		// window closes when the clock goes back to 01:00 EST and opens
		// again at 01:30 EST: 2h30 of real time in two intervals.
		{"New York fall: split, first", "Sun 01:30-03:30", "America/New_York", "2026-10-31T12:00:00Z",
			"2026-11-01T05:30:00Z", "2026-11-01T06:00:00Z"},
		{"New York fall: split, second", "Sun 01:30-03:30", "America/New_York", "2026-11-01T06:00:00Z",
			"2026-11-01T06:30:00Z", "2026-11-01T08:30:00Z"},
		{"New York fall: 3h", "Sun 00:30-02:30", "America/New_York", "2026-10-31T12:00:00Z",
			"2026-11-01T04:30:00Z", "2026-11-01T07:30:00Z"},
		{"New York fall: first pass", "Sun 01:15-01:45", "America/New_York", "2026-10-31T12:00:00Z",
			"2026-11-01T05:15:00Z", "2026-11-01T05:45:00Z"},
		{"New York fall: second pass", "Sun 01:15-01:45", "America/New_York", "2026-11-01T05:45:00Z",
			"2026-11-01T06:15:00Z", "2026-11-01T06:45:00Z"},
		{"New York fall: next week", "Sun 01:15-01:45", "America/New_York", "2026-11-01T06:45:00Z",
			"2026-11-08T06:15:00Z", "2026-11-08T06:45:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			loc := loadLoc(t, tt.zone)
			w := mustParse(t, tt.spec, loc)
			start, end := w.Next(ts(t, tt.at))
			if !start.Equal(ts(t, tt.start)) || !end.Equal(ts(t, tt.end)) {
				t.Errorf("Parse(%q) in %s: Next(%s) = %s, %s; want %s, %s", tt.spec, tt.zone, tt.at,
					start.Format(time.RFC3339), end.Format(time.RFC3339), tt.start, tt.end)
			}
			if start.Location() != loc || end.Location() != loc {
				t.Errorf("Next returned times in %s, %s; want %s", start.Location(), end.Location(), loc)
			}
		})
	}
}

func TestAlways(t *testing.T) {
	at := ts(t, "2026-03-29T01:00:00Z")
	for _, spec := range []string{"*", "daily 00:00-24:00", "* 00:00-24:00", "daily 22:00-02:00; daily 01:00-23:00", "Mon-Sun 12:00-12:01; *"} {
		w := mustParse(t, spec, loadLoc(t, "Europe/Berlin"))
		if !w.Always() || !w.Contains(at) {
			t.Errorf("Parse(%q): Always() = %v, Contains = %v; want true, true", spec, w.Always(), w.Contains(at))
		}
		if start, end := w.Next(at); !start.Equal(at) || !end.IsZero() {
			t.Errorf("Parse(%q): Next(%s) = %s, %s; want %s and the zero Time", spec, at, start, end, at)
		}
	}
	if w := mustParse(t, "Mon-Sat 00:00-24:00", time.UTC); w.Always() {
		t.Errorf("Parse(Mon-Sat 00:00-24:00).Always() = true")
	}
	var zero Window
	if start, end := zero.Next(at); zero.Contains(at) || !start.IsZero() || !end.IsZero() || zero.String() != "" {
		t.Errorf("zero Window: Contains = %v, Next = %s, %s, String = %q; want never open", zero.Contains(at), start, end, zero.String())
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ spec, want string }{
		{"", "empty spec"},
		{"  \t", "empty spec"},
		{"Xyz 02:00-03:00", `unknown day "Xyz"`},
		{"Sat,,Sun 02:00-03:00", `unknown day ""`},
		{"Mon-Fri-Sat 01:00-02:00", `unknown day "Fri-Sat"`},
		{"Monday 01:00-02:00", `unknown day "Monday"`},
		{"Sat 25:00-03:00", "hour must be"},
		{"Sat 02:00-25:00", "hour must be"},
		{"Sat 12:60-13:00", "minute must be"},
		{"Sat 00:00-24:01", "hour must be"},
		{"Sat 02:00 03:00", `missing "-"`},
		{"Sat 02:00", `missing "-"`},
		{"Sat", "missing time range"},
		{"daily", "missing time range"},
		{"02:00-03:00", "missing days"},
		{"Sat02:00-03:00", "separated by white space"},
		{"Sat 03:00-03:00", "end equals start"},
		{"Sat 00:00-00:00", "end equals start"},
		{"Sat 24:00-03:00", "only allowed as the end"},
		{"Sat 2:00-03:00", "want HH:MM"},
		{"Sat 02:00-03:00x", "want HH:MM"},
		{"Sat 02:00-03:00-04:00", "want HH:MM"},
		{"Sat 02:00-03:00;", "empty rule"},
		{"; Sat 02:00-03:00", "empty rule"},
		{"Sat 02:00-03:00; Sun", "missing time range"},
	}
	for _, tt := range tests {
		w, err := Parse(tt.spec, time.UTC)
		if err == nil {
			t.Errorf("Parse(%q) = %q, want error containing %q", tt.spec, w, tt.want)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) error = %q, want it to contain %q", tt.spec, err, tt.want)
		}
	}
	if _, err := Parse("*", nil); err == nil {
		t.Error("Parse with nil location succeeded")
	}
}

func TestString(t *testing.T) {
	tests := []struct{ spec, want string }{
		{"Sat,Sun 02:00-05:00", "Sat,Sun 02:00-05:00"},
		{"  sat , SUN 02:00 - 05:00 ", "Sat,Sun 02:00-05:00"},
		{"Mon-Fri 22:30-01:00", "Mon-Fri 22:30-01:00"},
		{"Mon,Tue,Wed,Thu,Fri 22:30-01:00", "Mon-Fri 22:30-01:00"},
		{"daily 03:00-04:00", "daily 03:00-04:00"},
		{"* 03:00-04:00", "daily 03:00-04:00"},
		{"DAILY 03:00-04:00", "daily 03:00-04:00"},
		{"*", "*"},
		{"daily 00:00-24:00", "*"},
		{"daily 22:00-02:00; daily 01:00-23:00", "*"},
		{"Fri-Mon 01:00-02:00", "Mon,Fri-Sun 01:00-02:00"},
		{"Sun-Sun 01:00-02:00", "Sun 01:00-02:00"},
		{"Sat 20:00-24:00; Sun 00:00-06:00", "Sat 20:00-06:00"},
		{"Sat 22:00-00:00", "Sat 22:00-24:00"},
		{"Sun 23:00-02:00", "Sun 23:00-02:00"},
		{"Mon-Fri 00:00-24:00", "Mon-Fri 00:00-24:00"},
		{"Sat 20:00-04:00; Sun 03:00-22:00", "Sat 20:00-24:00; Sun 00:00-22:00"},
		{"Mon 12:00-24:00; Tue 00:00-12:00", "Mon 12:00-24:00; Tue 00:00-12:00"},
		{"Sun 12:00-24:00; Mon 00:00-12:00", "Mon 00:00-12:00; Sun 12:00-24:00"},
		{"Mon 10:00-11:00; Tue 10:00-11:00; Mon 12:00-13:00", "Mon,Tue 10:00-11:00; Mon 12:00-13:00"},
		{"Tue 10:00-11:00; Mon 10:30-10:45", "Mon 10:30-10:45; Tue 10:00-11:00"},
	}
	for _, tt := range tests {
		w := mustParse(t, tt.spec, time.UTC)
		got := w.String()
		if got != tt.want {
			t.Errorf("Parse(%q).String() = %q, want %q", tt.spec, got, tt.want)
		}
		if w2 := mustParse(t, got, time.UTC); w2 != w {
			t.Errorf("Parse(%q) != Parse(%q)", got, tt.spec)
		}
	}
}

// checkInterval checks Next(at) against Contains: the interval contains at
// exactly when Contains(at), does not lie before at, and is maximal.
func checkInterval(t *testing.T, w Window, at time.Time) (start, end time.Time) {
	t.Helper()
	start, end = w.Next(at)
	if start.IsZero() || !start.Before(end) || !end.After(at) {
		t.Fatalf("%q in %s: Next(%s) = %s, %s: want start < end and end > t", w, w.Location(), at, start, end)
	}
	inside := !at.Before(start) && at.Before(end)
	if w.Contains(at) != inside {
		t.Fatalf("%q in %s: Contains(%s) = %v, but Next = %s, %s", w, w.Location(), at, w.Contains(at), start, end)
	}
	if !w.Contains(start) || !w.Contains(end.Add(-time.Second)) || w.Contains(end) || w.Contains(start.Add(-time.Second)) {
		t.Fatalf("%q in %s: Next(%s) = %s, %s is not a maximal interval of Contains", w, w.Location(), at, start, end)
	}
	return start, end
}

var propertySpecs = []string{
	"Sat,Sun 02:00-05:00",
	"Mon-Fri 22:30-01:00",
	"Sun 23:00-02:00",
	"daily 01:30-03:30",
	"daily 02:00-03:00",
	"daily 01:15-01:45; daily 02:10-02:20",
	"daily 00:00-02:00; daily 03:00-24:00",
	"daily 00:00-02:30; daily 02:31-24:00",
	"Mon-Sat 00:00-24:00; Sun 00:00-02:15; Sun 02:45-24:00",
	"Wed 12:00-12:01",
}

var propertyZones = []string{"Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "UTC"}

// TestProperty checks, for random instants over 2026 and densely around
// every DST transition of 2026, that Next agrees with Contains, and walks the
// windows of the whole year checking each opens after the previous closed.
func TestProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	yearStart, yearEnd := ts(t, "2026-01-01T00:00:00Z"), ts(t, "2027-01-01T00:00:00Z")
	for _, zone := range propertyZones {
		loc := loadLoc(t, zone)
		var transitions []time.Time
		for p := yearStart.In(loc); ; {
			_, end := p.ZoneBounds()
			if end.IsZero() || end.After(yearEnd) {
				break
			}
			transitions, p = append(transitions, end), end
		}
		for _, spec := range propertySpecs {
			w := mustParse(t, spec, loc)
			for range 300 {
				at := yearStart.Add(time.Duration(rng.Int64N(int64(yearEnd.Sub(yearStart)))))
				checkInterval(t, w, at)
			}
			for _, tr := range transitions {
				for at := tr.Add(-30 * time.Hour); at.Before(tr.Add(30 * time.Hour)); at = at.Add(7 * time.Minute) {
					checkInterval(t, w, at)
				}
			}
			prevEnd := time.Time{}
			for at := yearStart; at.Before(yearEnd); {
				start, end := checkInterval(t, w, at)
				if !prevEnd.IsZero() && !start.After(prevEnd) {
					t.Fatalf("%q in %s: window %s-%s opens before the previous one closed at %s", spec, zone, start, end, prevEnd)
				}
				prevEnd, at = end, end
			}
		}
	}
}

// TestYearTotals sums the real open time of a window over 2026: DST moves
// time between days but must not lose or invent any, except for a window in
// the skipped or repeated hour.
func TestYearTotals(t *testing.T) {
	tests := []struct {
		spec, zone string
		count      int
		total      time.Duration
	}{
		// 104 weekend days; in Berlin the spring Sunday is 2h and the
		// fall Sunday 4h. In New York the repeated hour is 01:00-02:00,
		// outside the window, so only spring loses an hour.
		{"Sat,Sun 02:00-05:00", "Europe/Berlin", 104, 312 * time.Hour},
		{"Sat,Sun 02:00-05:00", "America/New_York", 104, 311 * time.Hour},
		// 52 Sundays: skipped once in spring, 2h once in fall.
		{"Sun 02:00-03:00", "Europe/Berlin", 51, 52 * time.Hour},
		{"Sun 01:00-02:00", "America/New_York", 52, 53 * time.Hour},
		{"Sun 02:00-03:00", "America/New_York", 51, 51 * time.Hour},
		// Opens twice on the fall-back day.
		{"Sun 01:15-01:45", "America/New_York", 53, 53 * 30 * time.Minute},
	}
	for _, tt := range tests {
		loc := loadLoc(t, tt.zone)
		w := mustParse(t, tt.spec, loc)
		from, to := time.Date(2026, 1, 1, 0, 0, 0, 0, loc), time.Date(2027, 1, 1, 0, 0, 0, 0, loc)
		count, total := 0, time.Duration(0)
		for at := from; ; {
			start, end := w.Next(at)
			if !start.Before(to) {
				break
			}
			if !end.After(at) {
				t.Fatalf("%q in %s: Next(%s) = %s, %s ends before it", tt.spec, tt.zone, at, start, end)
			}
			count, total, at = count+1, total+end.Sub(start), end
		}
		if count != tt.count || total != tt.total {
			t.Errorf("%q in %s over 2026: %d windows, %s open; want %d, %s", tt.spec, tt.zone, count, total, tt.count, tt.total)
		}
	}
}

// FuzzParse checks that Parse does not panic, that String of a parsed window
// parses back to an equal window with the same String, and that Next agrees
// with Contains.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"Sat,Sun 02:00-05:00", "Mon-Fri 22:30-01:00", "daily 03:00-04:00", "*", "* 00:00-24:00",
		"Sun 23:00-02:00", "Fri-Mon 01:00-02:00", "sat 22:00-00:00; SUN 00:00-06:00",
		"Sat 20:00-04:00; Sun 03:00-22:00", "Mon 12:00-24:00; Tue 00:00-12:00",
		"Sat 25:00-26:00", "Sat 12:60-13:00", "Sat 02:00 03:00", "", ";", "Mon,,Tue 01:00-02:00",
	} {
		f.Add(s)
	}
	loc := loadLoc(f, "Europe/Berlin")
	at := time.Date(2026, 10, 25, 2, 30, 0, 0, loc)
	f.Fuzz(func(t *testing.T, spec string) {
		w, err := Parse(spec, loc)
		if err != nil {
			return
		}
		s := w.String()
		w2, err := Parse(s, loc)
		if err != nil {
			t.Fatalf("Parse(%q) = %q, which does not parse: %v", spec, s, err)
		}
		if w2 != w || w2.String() != s {
			t.Fatalf("Parse(%q) = %q, but that parses to %q", spec, s, w2)
		}
		if !w.Always() {
			checkInterval(t, w, at)
		}
	})
}
