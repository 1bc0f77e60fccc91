// Drives a mosemu pty with the real esptool-js, through a minimal Web
// Serial SerialPort implemented on the pty (a pty has no DTR/RTS, so the
// signal calls do nothing and the loader is used with "no_reset").
// Usage: node interop.mjs /dev/pts/N MODE [image.bin ADDRESS] (modes below)
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

// Modes:
//   write IMAGE ADDR    compressed write through the stub, MD5, read back
//   detect              chip detection only (stays in the stub)
//   encrypt IMAGE ADDR  encrypted write through the stub, as esptool 4.x
//                       `write_flash --encrypt` sends it (FLASH_BEGIN with the
//                       encrypt word; esptool-js has no option for it, so the
//                       commands are sent with its own checkCommand/flashBlock),
//                       then the same image again with the legacy stub's
//                       FLASH_ENCRYPT_DATA (0xD4) at ADDR+0x10000; reports the
//                       raw (ciphertext) MD5 of both regions.
const [path, mode, image, addrText] = process.argv.slice(2);
const out = {};
const terminal = { clean() {}, writeLine() {}, write() {} };
const transport = new Transport(new PtySerialPort(path), false);
const loader = new ESPLoader({ transport, baudrate: 115200, romBaudrate: 115200, terminal, debugLogging: false });
const md5 = (b) => crypto.createHash("md5").update(b).digest("hex");
const u32 = (...v) => { const b = Buffer.alloc(4 * v.length); v.forEach((x, i) => b.writeUInt32LE(x >>> 0, 4 * i)); return new Uint8Array(b); };
const cat = (a, b) => { const r = new Uint8Array(a.length + b.length); r.set(a); r.set(b, a.length); return r; };
try {
  out.chip = await loader.main("no_reset");
  out.features = String(await loader.chip.getChipFeatures(loader));
  out.crystal = await loader.chip.getCrystalFreq(loader);
  out.mac = await loader.chip.readMac(loader);
  if (mode === "write") {
    const data = new Uint8Array(fs.readFileSync(image));
    const addr = Number(addrText);
    await loader.writeFlash({
      fileArray: [{ data, address: addr }], flashMode: "keep", flashFreq: "keep", flashSize: "keep",
      eraseAll: false, compress: true,
      calculateMD5Hash: md5,
    });
    out.md5 = await loader.flashMd5sum(addr, data.length);
    const back = await loader.readFlash(addr, data.length);
    out.readBackMD5 = md5(back);
    out.fileMD5 = md5(data);
    await loader.after("hard_reset");
  } else if (mode === "encrypt") {
    const data = new Uint8Array(fs.readFileSync(image)); // a multiple of 32 bytes, as esptool pads encrypted images
    const addr = Number(addrText);
    const bs = loader.FLASH_WRITE_SIZE;
    const blocks = Math.ceil(data.length / bs);
    await loader.checkCommand("enter encrypted Flash download mode", loader.ESP_FLASH_BEGIN, u32(data.length, blocks, bs, addr, 1));
    for (let i = 0; i < blocks; i++) {
      await loader.flashBlock(data.slice(i * bs, (i + 1) * bs), i, 3000);
    }
    out.md5 = await loader.flashMd5sum(addr, data.length);
    const addr2 = addr + 0x10000;
    await loader.checkCommand("enter Flash download mode", loader.ESP_FLASH_BEGIN, u32(data.length, blocks, bs, addr2, 0));
    for (let i = 0; i < blocks; i++) {
      const blk = data.slice(i * bs, (i + 1) * bs);
      await loader.checkCommand("write encrypted data", 0xd4, cat(u32(blk.length, i, 0, 0), blk), loader.checksum(blk));
    }
    out.md5Legacy = await loader.flashMd5sum(addr2, data.length);
  }
} catch (e) {
  out.error = String(e && e.stack || e);
}
console.log(JSON.stringify(out));
process.exit(out.error ? 1 : 0);
