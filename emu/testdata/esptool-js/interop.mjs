// Drives a mosemu pty with the real esptool-js, through a minimal Web
// Serial SerialPort implemented on the pty (a pty has no DTR/RTS, so the
// signal calls do nothing and the loader is used with "no_reset").
// Usage: node interop.mjs /dev/pts/N image.bin ADDRESS
import fs from "node:fs";
import tty from "node:tty";
import crypto from "node:crypto";
import { Readable } from "node:stream";
import { ESPLoader, Transport } from "esptool-js";

class PtySerialPort {
  constructor(path) { this.path = path; this.readable = null; this.writable = null; }
  getInfo() { return { usbVendorId: 0x10c4, usbProductId: 0xea60 }; }
  async open() {
    this.fd = fs.openSync(this.path, fs.constants.O_RDWR | fs.constants.O_NOCTTY);
    this.rs = new tty.ReadStream(this.fd);
    this.readable = Readable.toWeb(this.rs);
    const fd = this.fd;
    // A tty write may take only part of the buffer, and tty.ReadStream put
    // the descriptor in non-blocking mode, so a full pty answers EAGAIN:
    // loop until everything is out.
    const writeAll = async (buf) => {
      while (buf.length > 0) {
        const n = await new Promise((ok, fail) => fs.write(fd, buf, (e, n) => {
          if (e && e.code === "EAGAIN") return setTimeout(() => ok(0), 2);
          return e ? fail(e) : ok(n);
        }));
        buf = buf.subarray(n);
      }
    };
    // Writes are queued in order and the stream released at once, as a
    // serial port's driver buffer does: esptool-js may write again (a
    // retry) before the previous bytes have drained into the pty.
    let queue = Promise.resolve();
    this.writable = new WritableStream({
      write: (chunk) => {
        const buf = Buffer.from(chunk);
        queue = queue.then(() => writeAll(buf)).catch((e) => console.error("pty write:", e));
      },
    });
  }
  async setSignals() {}
  async close() { this.readable = null; this.writable = null; this.rs.destroy(); }
}

const [path, image, addrText] = process.argv.slice(2);
const data = new Uint8Array(fs.readFileSync(image));
const addr = Number(addrText);
const out = {};
const terminal = { clean() {}, writeLine() {}, write() {} };
const transport = new Transport(new PtySerialPort(path), false);
const loader = new ESPLoader({ transport, baudrate: 115200, romBaudrate: 115200, terminal, debugLogging: false });
try {
  out.chip = await loader.main("no_reset");
  out.mac = await loader.chip.readMac(loader);
  await loader.writeFlash({
    fileArray: [{ data, address: addr }], flashMode: "keep", flashFreq: "keep", flashSize: "keep",
    eraseAll: false, compress: true,
    calculateMD5Hash: (img) => crypto.createHash("md5").update(img).digest("hex"),
  });
  out.md5 = await loader.flashMd5sum(addr, data.length);
  const back = await loader.readFlash(addr, data.length);
  out.readBackMD5 = crypto.createHash("md5").update(back).digest("hex");
  out.fileMD5 = crypto.createHash("md5").update(data).digest("hex");
  await loader.after("hard_reset");
} catch (e) {
  out.error = String(e && e.stack || e);
}
console.log(JSON.stringify(out));
process.exit(out.error ? 1 : 0);
