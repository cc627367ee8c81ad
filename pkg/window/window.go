// Package window parses and evaluates weekly maintenance windows such as
// "Sat,Sun 02:00-05:00": the wall-clock times at which abctl's fleet agent
// may reboot a node, in the node's time zone.
//
// The package is pure: it reads no clock (every instant is a parameter) and
// does no I/O beyond what the caller's *time.Location already loaded. It does
// not know holidays, calendars other than the 7-day week, or windows longer
// than a week.
//
// # Syntax
//
// A spec is one or more rules separated by ";":
//
//	spec  = rule { ";" rule }
//	rule  = "*" | days range
//	days  = "*" | "daily" | item { "," item }
//	item  = day | day "-" day
//	day   = "Mon" | "Tue" | "Wed" | "Thu" | "Fri" | "Sat" | "Sun"
//	range = time "-" time
//	time  = HH ":" MM   (two digits each; HH 00-23, MM 00-59; "24:00" only as an end)
//
// Day names, "daily" and "*" are case-insensitive. DAYS and the range of a
// rule are separated by white space; other white space inside DAYS and the
// range, and around rules, is ignored. A day range may wrap around the end of
// the week: "Fri-Mon" is Fri,Sat,Sun,Mon. A rule "*" on its own (in
// particular the spec "*") means always open; "*" or "daily" as DAYS means
// every day.
//
// Each rule opens at its start time on every listed day. It closes at its end
// time on the same day if end > start, or on the next day if end < start (it
// crosses midnight: "Fri 22:30-01:00" closes Saturday 01:00, and
// "Sun 23:00-02:00" closes Monday 02:00). "24:00" is midnight at the end of
// the day, so "00:00-24:00" is a whole day. End == start is an error, so a
// rule lasts at least a minute and at most 24 hours. The window is open
// whenever any of its rules is; overlapping and adjacent rules merge.
//
// # Time zones and daylight saving time
//
// A window is a set of wall-clock minutes of the week in one location. An
// instant is inside the window if and only if the clock in that location
// reads, at that instant, a time inside the window. This is exactly what an
// operator looking at the node's clock sees, and it decides every DST case:
//
//   - Spring forward skips wall times. A window lying entirely in the skipped
//     hour does not happen that day: "Sun 02:00-03:00" in Europe/Berlin is
//     skipped on 2026-03-29, when clocks jump from 02:00 CET to 03:00 CEST.
//     A window partly in the skipped hour is shortened: "Sun 01:30-03:30"
//     lasts 1 hour of real time that day; "Sun 02:30-04:00" opens at
//     03:00 CEST.
//   - Fall back repeats wall times, and a window covers both passes:
//     "Sun 02:00-03:00" in Europe/Berlin on 2026-10-25 is open from
//     02:00 CEST to 03:00 CET, 2 hours of real time; "Sun 01:30-03:30" lasts
//     3 hours. If only part of the repeated hour is inside the window, the
//     window opens twice: "Sun 01:15-01:45" in America/New_York on 2026-11-01
//     is open 01:15-01:45 EDT and again 01:15-01:45 EST, and Next reports the
//     two intervals separately. Likewise "Sun 01:30-03:30" there is open
//     01:30-02:00 EDT, closes when the clock goes back to 01:00 EST, and
//     opens again 01:30-03:30 EST; in Europe/Berlin, where the whole
//     repeated hour 02:00-03:00 is inside it, it lasts 3 hours in one piece.
//
// Instants are compared at second resolution against wall times at minute
// resolution; sub-second parts of an instant are truncated.
package window

import (
	"cmp"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strings"
	"time"
)

const (
	minutesPerDay  = 24 * 60
	minutesPerWeek = 7 * minutesPerDay
	secondsPerWeek = minutesPerWeek * 60

	// lookBehind and lookAhead bound the span of real time Next examines.
	// An interval in which the window is continuously open can only span a
	// wall minute the window excludes if a DST transition skips that
	// minute, so unless the window is always open an interval lasts less
	// than two weeks (zones change offset at most a few times a year), and
	// the next interval opens within two weeks. Four weeks behind and six
	// ahead leave a margin.
	lookBehind = 4 * secondsPerWeek
	lookAhead  = 6 * secondsPerWeek
)

// dayNames are indexed by day of the week starting on Monday (ISO 8601),
// the index used throughout this package.
var dayNames = [7]string{"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}

// minuteSet is a set of minutes of the week, minute 0 being Monday 00:00.
type minuteSet [(minutesPerWeek + 63) / 64]uint64

func (s *minuteSet) add(m int) { s[m/64] |= 1 << (m % 64) }

func (s *minuteSet) has(m int) bool { return s[m/64]&(1<<(m%64)) != 0 }

func (s *minuteSet) count() int {
	n := 0
	for _, w := range s {
		n += bits.OnesCount64(w)
	}
	return n
}

// run is a maximal stretch of minutes in a minuteSet, possibly wrapping from
// Sunday into Monday: it starts at minute start (0 <= start < minutesPerWeek)
// and lasts length minutes (0 < length < minutesPerWeek).
type run struct{ start, length int }

// runs returns the maximal runs of s in order of their start. It must not be
// called on an empty or full set.
func (s *minuteSet) runs() []run {
	// Begin scanning just after a minute that is not in the set, so that
	// no run is cut in two by the end of the week.
	gap := 0
	for s.has(gap) {
		gap++
	}
	var rs []run
	for i := 1; i <= minutesPerWeek; i++ {
		m := (gap + i) % minutesPerWeek
		switch {
		case !s.has(m):
		case len(rs) > 0 && (rs[len(rs)-1].start+rs[len(rs)-1].length)%minutesPerWeek == m:
			rs[len(rs)-1].length++
		default:
			rs = append(rs, run{start: m, length: 1})
		}
	}
	slices.SortFunc(rs, func(a, b run) int { return a.start - b.start })
	return rs
}

// Window is a set of weekly wall-clock intervals in a location. Windows are
// comparable with ==: two Windows are equal if they have the same location
// and open at the same wall-clock minutes of the week, however their specs
// were written. The zero Window is never open.
type Window struct {
	loc     *time.Location
	minutes minuteSet
}

// Parse parses spec (see the package documentation for the syntax) as a
// window in loc.
func Parse(spec string, loc *time.Location) (Window, error) {
	if loc == nil {
		return Window{}, errors.New("parsing window: nil location")
	}
	if strings.TrimSpace(spec) == "" {
		return Window{}, errors.New("parsing window: empty spec")
	}
	w := Window{loc: loc}
	for _, rule := range strings.Split(spec, ";") {
		if err := w.addRule(strings.TrimSpace(rule)); err != nil {
			return Window{}, fmt.Errorf("parsing window rule %q: %w", strings.TrimSpace(rule), err)
		}
	}
	return w, nil
}

// addRule adds the minutes of one rule to w.
func (w *Window) addRule(rule string) error {
	if rule == "" {
		return errors.New("empty rule")
	}
	if rule == "*" {
		for m := range minutesPerWeek {
			w.minutes.add(m)
		}
		return nil
	}
	i := strings.IndexAny(rule, "0123456789")
	if i < 0 {
		return errors.New("missing time range HH:MM-HH:MM")
	}
	daysPart, rangePart := rule[:i], rule[i:]
	if daysPart == "" {
		return errors.New("missing days before the time range")
	}
	if !strings.ContainsAny(daysPart[len(daysPart)-1:], " \t") {
		return fmt.Errorf("days %q and time range must be separated by white space", daysPart)
	}
	days, err := parseDays(removeSpace(daysPart))
	if err != nil {
		return err
	}
	start, length, err := parseRange(removeSpace(rangePart))
	if err != nil {
		return err
	}
	for d := range 7 {
		if days&(1<<d) == 0 {
			continue
		}
		for m := range length {
			w.minutes.add((d*minutesPerDay + start + m) % minutesPerWeek)
		}
	}
	return nil
}

func removeSpace(s string) string { return strings.Join(strings.Fields(s), "") }

// parseDays parses DAYS into a bit mask, bit 0 being Monday.
func parseDays(s string) (uint8, error) {
	if s == "*" || strings.EqualFold(s, "daily") {
		return 0x7f, nil
	}
	var mask uint8
	for _, item := range strings.Split(s, ",") {
		first, last, isRange := strings.Cut(item, "-")
		a, err := parseDay(first)
		if err != nil {
			return 0, err
		}
		b := a
		if isRange {
			if b, err = parseDay(last); err != nil {
				return 0, err
			}
		}
		for d := a; ; d = (d + 1) % 7 {
			mask |= 1 << d
			if d == b {
				break
			}
		}
	}
	return mask, nil
}

func parseDay(s string) (int, error) {
	for i, name := range dayNames {
		if strings.EqualFold(s, name) {
			return i, nil
		}
	}
	return 0, fmt.Errorf("unknown day %q: want Mon, Tue, Wed, Thu, Fri, Sat or Sun", s)
}

// parseRange parses "HH:MM-HH:MM" into a start minute of the day and a
// length in minutes (1 to minutesPerDay).
func parseRange(s string) (start, length int, err error) {
	from, to, ok := strings.Cut(s, "-")
	if !ok {
		return 0, 0, fmt.Errorf("time range %q: missing \"-\", want HH:MM-HH:MM", s)
	}
	if start, err = parseTime(from); err != nil {
		return 0, 0, err
	}
	if start == minutesPerDay {
		return 0, 0, fmt.Errorf("time range %q: 24:00 is only allowed as the end", s)
	}
	end, err := parseTime(to)
	if err != nil {
		return 0, 0, err
	}
	switch {
	case end == start:
		return 0, 0, fmt.Errorf("time range %q: end equals start (use 00:00-24:00 for a whole day)", s)
	case end < start: // crosses midnight
		end += minutesPerDay
	}
	return start, end - start, nil
}

// parseTime parses "HH:MM" (or "24:00") into minutes since midnight.
func parseTime(s string) (int, error) {
	if len(s) != 5 || s[2] != ':' || !isDigits(s[:2]) || !isDigits(s[3:]) {
		return 0, fmt.Errorf("time %q: want HH:MM with two digits each", s)
	}
	h := int(s[0]-'0')*10 + int(s[1]-'0')
	m := int(s[3]-'0')*10 + int(s[4]-'0')
	switch {
	case h == 24 && m == 0:
	case h > 23:
		return 0, fmt.Errorf("time %q: hour must be 00 to 23 (or 24:00)", s)
	case m > 59:
		return 0, fmt.Errorf("time %q: minute must be 00 to 59", s)
	}
	return h*60 + m, nil
}

func isDigits(s string) bool {
	return strings.Trim(s, "0123456789") == ""
}

// Location returns the location whose wall clock w is evaluated in.
func (w Window) Location() *time.Location { return w.loc }

// Always reports whether w is open at every minute of the week, as the spec
// "*" is.
func (w Window) Always() bool { return w.minutes.count() == minutesPerWeek }

// Contains reports whether t is inside w: whether the wall clock in w's
// location reads, at t, a time inside the window.
func (w Window) Contains(t time.Time) bool {
	if w.loc == nil {
		return false
	}
	l := t.In(w.loc)
	day := (int(l.Weekday()) + 6) % 7 // Monday first
	return w.minutes.has(day*minutesPerDay + l.Hour()*60 + l.Minute())
}

// Next returns the interval [start, end) of real time during which w is
// continuously open and which either contains t (start <= t < end) or, if w
// is closed at t, is the next one to open (t < start). Intervals of adjacent
// rules are merged, so w is closed at end. Both times are in w's location.
//
// If w is always open, Next returns t and the zero Time, meaning that w never
// closes. If w never opens (the zero Window), Next returns two zero Times.
func (w Window) Next(t time.Time) (start, end time.Time) {
	if w.loc == nil {
		return time.Time{}, time.Time{}
	}
	if w.Always() {
		return t, time.Time{}
	}
	now := t.Unix()
	for _, iv := range merge(w.intervals(now-lookBehind, now+lookAhead)) {
		if iv.end > now {
			return time.Unix(iv.start, 0).In(w.loc), time.Unix(iv.end, 0).In(w.loc)
		}
	}
	return time.Time{}, time.Time{}
}

// interval is a half-open interval [start, end) of Unix seconds.
type interval struct{ start, end int64 }

// intervals returns, unsorted and unmerged, the intervals of real time within
// [from, to) during which w is open. Within one zone period (a span of real
// time with a constant UTC offset, between two transitions) the wall clock
// reads unix+offset, so a wall-clock interval [a, b) maps to the real
// interval [a-offset, b-offset) cut to the period. DST gaps and repeats fall
// out of the cutting at period boundaries.
func (w Window) intervals(from, to int64) []interval {
	runs := w.minutes.runs()
	var ivs []interval
	for p := from; p < to; {
		t := time.Unix(p, 0).In(w.loc)
		_, offset := t.Zone()
		_, periodEnd := t.ZoneBounds()
		pEnd := to
		if !periodEnd.IsZero() && periodEnd.Unix() < to {
			pEnd = periodEnd.Unix()
		}
		off := int64(offset)
		// Every run that can overlap wall times [p+off, pEnd+off) starts
		// in the week of p+off, the week before (runs wrap into the next
		// week), or a later week before pEnd+off.
		for week := weekStart(p+off) - secondsPerWeek; week < pEnd+off; week += secondsPerWeek {
			for _, r := range runs {
				a := week + int64(r.start)*60 - off
				b := a + int64(r.length)*60
				if a, b = max(a, p), min(b, pEnd); a < b {
					ivs = append(ivs, interval{a, b})
				}
			}
		}
		p = pEnd
	}
	return ivs
}

// weekStart returns the Monday 00:00 at or before the wall time wall, both
// in seconds since 1970-01-01 00:00 (a Thursday) on the wall clock.
func weekStart(wall int64) int64 {
	const thursday = 3 * 24 * 60 * 60 // Monday 00:00 to Thursday 00:00
	m := (wall + thursday) % secondsPerWeek
	if m < 0 {
		m += secondsPerWeek
	}
	return wall - m
}

// merge sorts ivs and merges overlapping and adjacent intervals.
func merge(ivs []interval) []interval {
	slices.SortFunc(ivs, func(a, b interval) int { return cmp.Compare(a.start, b.start) })
	var out []interval
	for _, iv := range ivs {
		if n := len(out); n > 0 && iv.start <= out[n-1].end {
			out[n-1].end = max(out[n-1].end, iv.end)
			continue
		}
		out = append(out, iv)
	}
	return out
}

// String returns w in the syntax Parse accepts, in a canonical form: rules
// with the same times share one DAYS list, overlapping rules are merged, and
// a window open all week is "*". Parsing the result in the same location
// gives a Window equal to w. The location is not part of the string. The
// zero Window gives "".
func (w Window) String() string {
	switch n := w.minutes.count(); {
	case n == 0:
		return ""
	case n == minutesPerWeek:
		return "*"
	}
	// A run becomes one rule if a rule can express it (at most 24 hours,
	// and exactly 24 only from midnight); otherwise it is split at every
	// midnight. Rules with equal times share one DAYS list.
	type times struct{ start, length int }
	days := map[times]uint8{}
	var order []times
	addRule := func(m, length int) {
		k := times{m % minutesPerDay, length}
		if _, ok := days[k]; !ok {
			order = append(order, k)
		}
		days[k] |= 1 << (m / minutesPerDay)
	}
	for _, r := range w.minutes.runs() {
		if r.length < minutesPerDay || r.length == minutesPerDay && r.start%minutesPerDay == 0 {
			addRule(r.start, r.length)
			continue
		}
		for m, left := r.start, r.length; left > 0; {
			n := min(left, minutesPerDay-m%minutesPerDay)
			addRule(m, n)
			m, left = (m+n)%minutesPerWeek, left-n
		}
	}
	// List rules by their first day, then time of day.
	slices.SortFunc(order, func(a, b times) int {
		return cmp.Or(cmp.Compare(bits.TrailingZeros8(days[a]), bits.TrailingZeros8(days[b])),
			cmp.Compare(a.start, b.start), cmp.Compare(a.length, b.length))
	})
	rules := make([]string, len(order))
	for i, k := range order {
		end := (k.start + k.length) % minutesPerDay
		endText := fmt.Sprintf("%02d:%02d", end/60, end%60)
		if end == 0 {
			endText = "24:00"
		}
		rules[i] = fmt.Sprintf("%s %02d:%02d-%s", formatDays(days[k]), k.start/60, k.start%60, endText)
	}
	return strings.Join(rules, "; ")
}

// formatDays formats a day mask, bit 0 being Monday, as "daily" or a list
// such as "Mon-Wed,Sat" (runs of three or more days as ranges).
func formatDays(mask uint8) string {
	if mask == 0x7f {
		return "daily"
	}
	var items []string
	for d := 0; d < 7; d++ {
		if mask&(1<<d) == 0 {
			continue
		}
		e := d
		for e+1 < 7 && mask&(1<<(e+1)) != 0 {
			e++
		}
		switch e - d {
		case 0:
			items = append(items, dayNames[d])
		case 1:
			items = append(items, dayNames[d], dayNames[e])
		default:
			items = append(items, dayNames[d]+"-"+dayNames[e])
		}
		d = e
	}
	return strings.Join(items, ",")
}
