// An independent reader written for keyrotate's tests: it follows TREK's documented read path
// (TREK-FORMAT.md §2 and §3) in Node, the runtime TREK itself uses, so Node's own base64 decoder,
// String.prototype.trim and AES-GCM judge what keyrotate wrote.
//
// Input on stdin: {"dataDir": DIR, "values": [{"stored": TEXT|null, "scheme": "api"|"mfa"}, ...]}
// or {"base64": [TEXT, ...]} (hex of Buffer.from(text, "base64") for each),
// or {"trim": [TEXT, ...]}.
// Output on stdout: a JSON array, one answer per input item.
"use strict";
const crypto = require("crypto");
const fs = require("fs");
const path = require("path");

function resolveKey(dataDir) {
  if (process.env.ENCRYPTION_KEY) return process.env.ENCRYPTION_KEY;
  for (const name of [".encryption_key", ".jwt_secret"]) {
    const file = path.join(dataDir, name);
    if (fs.existsSync(file)) {
      const text = fs.readFileSync(file, "utf8").trim();
      if (text) return text;
    }
  }
  throw new Error("no key in " + dataDir);
}

function aesKey(keyText, domain) {
  return crypto.createHash("sha256").update(keyText + ":" + domain + ":v1").digest();
}

function open(stored, scheme, keyText) {
  if (stored === null || stored === "") return null; // "not set"
  let body = stored;
  if (scheme === "api") {
    if (!stored.startsWith("enc:v1:")) return { plain: stored }; // legacy plaintext, used as is
    body = stored.slice("enc:v1:".length);
  }
  const sealed = Buffer.from(body, "base64");
  if (sealed.length < 28) return { failed: true };
  const decipher = crypto.createDecipheriv("aes-256-gcm", aesKey(keyText, scheme === "api" ? "api_keys" : "mfa"),
    sealed.subarray(0, 12));
  decipher.setAuthTag(sealed.subarray(12, 28));
  try {
    const out = Buffer.concat([decipher.update(sealed.subarray(28)), decipher.final()]);
    return { plain: out.toString("utf8") };
  } catch (e) {
    return { failed: true }; // TREK reads this as "not set"
  }
}

const input = JSON.parse(fs.readFileSync(0, "utf8"));
let answers;
if (input.base64) {
  answers = input.base64.map((s) => Buffer.from(s, "base64").toString("hex"));
} else if (input.trim) {
  answers = input.trim.map((s) => s.trim());
} else {
  const keyText = resolveKey(input.dataDir);
  answers = input.values.map((v) => open(v.stored, v.scheme, keyText));
}
process.stdout.write(JSON.stringify(answers));
