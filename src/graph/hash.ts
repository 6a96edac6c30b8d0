// SHA-256 of bytes (or UTF-8 text) as lowercase hex: WebCrypto where it exists (Node 20+, browsers in a secure context),
// @noble/hashes' audited pure-JS SHA-256 where it does not (plain-HTTP pages that are not localhost have no crypto.subtle).
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex } from '@noble/hashes/utils.js';

/** The WebCrypto digest, when this context has one (tests pass `null` to force the pure-JS path). */
type Subtle = Pick<SubtleCrypto, 'digest'> | null | undefined;

function webCrypto(): Subtle {
  return (globalThis as { crypto?: { subtle?: SubtleCrypto } }).crypto?.subtle;
}

/**
 * sha256 of `data` as 64 lowercase hex chars. A string is hashed as its UTF-8 bytes.
 * @param subtle WebCrypto to use; defaults to `globalThis.crypto.subtle`, the pure-JS SHA-256 when there is none.
 */
export async function sha256Hex(data: Uint8Array | string, subtle: Subtle = webCrypto()): Promise<string> {
  const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
  if (!subtle) return bytesToHex(sha256(bytes));
  const digest = await subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>);
  return bytesToHex(new Uint8Array(digest));
}
