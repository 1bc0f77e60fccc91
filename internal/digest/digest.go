// Package digest holds the hash helpers of HTTP digest authentication as
// Mongoose OS uses it (MD5, or SHA-256 when the algorithm says so).
package digest

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"hash"
)

// Hasher returns SHA-256 for "SHA-256" and MD5 for anything else.
func Hasher(algo string) func() hash.Hash {
	if algo == "SHA-256" {
		return sha256.New
	}
	return md5.New
}

// Hex is the lowercase hex digest of s.
func Hex(h func() hash.Hash, s string) string {
	x := h()
	x.Write([]byte(s))
	return hex.EncodeToString(x.Sum(nil))
}
