// SHA-256 of bytes as lowercase hex, through WebCrypto (Node 20+ and browsers).
import { SelfxitError } from '../errors.js';

/** sha256 of `bytes` as 64 lowercase hex chars. Uses `globalThis.crypto.subtle`. */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle)
    throw new SelfxitError(
      'INTERNAL',
      'WebCrypto (crypto.subtle) is not available here; sha256 needs a secure context or Node >= 20',
    );
  const digest = await subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>);
  const b = new Uint8Array(digest);
  let s = '';
  for (let i = 0; i < b.length; i++) s += b[i]!.toString(16).padStart(2, '0');
  return s;
}
