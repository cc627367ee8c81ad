package fleet

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/abboot/abboot/pkg/bundle"
)

// A channel file tells agents the desired version without etcd holding
// it: a JSON object
//
//	{"version": "2.1", "url": "https://updates.example/os-2.1.bundle", "signature": "BASE64"}
//
// whose signature is an Ed25519 signature, by a key of the node's bundle
// keyring (bundle.LoadKeys), of the bytes
//
//	"abboot-channel-v1\nversion=" + version + "\nurl=" + url + "\n"
//
// The signed message is this fixed text rather than the JSON so that
// signers need not agree on a JSON encoding; neither field may contain a
// line break, so it is unambiguous. The prefix keeps a channel signature
// from being taken for a bundle signature made by the same key.
const channelPrefix = "abboot-channel-v1\n"

// maxChannelSize bounds what Fetch reads; a channel file is a few hundred
// bytes.
const maxChannelSize = 64 << 10

// ErrBadChannelSignature means a channel file is not signed by a trusted key.
var ErrBadChannelSignature = errors.New("bad channel signature")

type channelFile struct {
	Version   string `json:"version"`
	URL       string `json:"url"`
	Signature []byte `json:"signature"`
}

func channelMessage(d Desired) ([]byte, error) {
	if err := d.validate(); err != nil {
		return nil, err
	}
	if strings.ContainsAny(d.URL, "\r\n") {
		return nil, errors.New("channel URL contains a line break")
	}
	return []byte(channelPrefix + "version=" + d.Version + "\nurl=" + d.URL + "\n"), nil
}

// SignChannel returns the channel file announcing d, signed with key.
func SignChannel(d Desired, key ed25519.PrivateKey) ([]byte, error) {
	msg, err := channelMessage(d)
	if err != nil {
		return nil, err
	}
	return json.MarshalIndent(channelFile{Version: d.Version, URL: d.URL, Signature: ed25519.Sign(key, msg)}, "", "\t")
}

// ParseChannel checks a channel file's signature against keys and returns
// what it announces.
func ParseChannel(data []byte, keys bundle.Keyring) (Desired, error) {
	var f channelFile
	if err := json.Unmarshal(data, &f); err != nil {
		return Desired{}, fmt.Errorf("parsing the channel file: %w", err)
	}
	d := Desired{Version: f.Version, URL: f.URL}
	msg, err := channelMessage(d)
	if err != nil {
		return Desired{}, fmt.Errorf("channel file: %w", err)
	}
	for _, k := range keys {
		if ed25519.Verify(k, msg, f.Signature) {
			return d, nil
		}
	}
	return Desired{}, fmt.Errorf("channel file for %s: %w: it does not verify with any of the %d trusted keys", d.Version, ErrBadChannelSignature, len(keys))
}

// Channel is a channel file served over HTTP(S).
type Channel struct {
	URL    string
	Keys   bundle.Keyring
	Client *http.Client // nil: http.DefaultClient
}

// Fetch downloads and checks the channel file.
func (c *Channel) Fetch(ctx context.Context) (Desired, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL, nil)
	if err != nil {
		return Desired{}, fmt.Errorf("channel %s: %w", c.URL, err)
	}
	hc := c.Client
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return Desired{}, fmt.Errorf("fetching channel: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Desired{}, fmt.Errorf("fetching channel %s: %s", c.URL, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxChannelSize+1))
	if err != nil {
		return Desired{}, fmt.Errorf("fetching channel %s: %w", c.URL, err)
	}
	if len(data) > maxChannelSize {
		return Desired{}, fmt.Errorf("channel %s: larger than %d bytes", c.URL, maxChannelSize)
	}
	return ParseChannel(data, c.Keys)
}
