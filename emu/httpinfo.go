package emu

// HTTPTLS reports whether the firmware's HTTP server runs TLS
// (http.ssl_cert set): its URLs are then https:// and wss://.
func (d *Device) HTTPTLS() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.httpTLS
}

// HTTPListenAddr returns the firmware's http.listen_addr: the address the
// server has inside the emulated device. On the host it is served at
// HTTPAddr, whatever listen_addr says.
func (d *Device) HTTPListenAddr() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.httpPort
}
