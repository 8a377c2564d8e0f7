/**
 * jsonb: JSON values in a binary form that is faster to write and to read than JSON text. The
 * format and its rules are in jsonb/format.ts; encoding in jsonb/encode.ts, decoding in
 * jsonb/decode.ts.
 */
import { codegenAllowed, gen, MAX_DECODER_BYTES, MAX_DECODER_SHAPES, MAX_ENCODER_BYTES, MAX_TRIE_NODES } from './jsonb/format';
import { decoderStats, resetDecoder } from './jsonb/decode';
import { encoderStats, resetEncoder } from './jsonb/encode';

export { JsonbError } from './jsonb/format';
export { encode, encodeShared } from './jsonb/encode';
export { decode, decodeRange } from './jsonb/decode';

/** For tests: forget every shape (encoder and decoder), and force or allow code generation. */
export function resetShapes(useCodegen = true): void {
  resetEncoder();
  resetDecoder();
  gen.on = useCodegen && codegenAllowed;
}

/** For tests and diagnostics: what the shape caches of this thread hold (bytes are estimates). */
export function shapeCacheStats(): { encoder: { nodes: number; bytes: number; evictions: number }; decoder: { shapes: number; bytes: number; evictions: number } } {
  return { encoder: encoderStats(), decoder: decoderStats() };
}

/** The bounds of the shape caches (per thread), as documented in docs/codecs.md. */
export const shapeCacheLimits = {
  encoderNodes: MAX_TRIE_NODES,
  encoderBytes: MAX_ENCODER_BYTES,
  decoderShapes: MAX_DECODER_SHAPES,
  decoderBytes: MAX_DECODER_BYTES,
} as const;
