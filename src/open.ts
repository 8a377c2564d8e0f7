/**
 * Creating and opening named objects, written once for every kind: create (ERR_SHMKIT_EXISTS if
 * the name is taken), open (ERR_SHMKIT_NOT_FOUND if absent), openOrCreate (exactly one of many
 * racers creates). The handle is built from the segment by the kind's `build`; if building throws
 * (bad parameters in the header, a role that cannot be taken), the segment is closed before the
 * error propagates, so a failed open leaves nothing mapped.
 */
import { ErrorCodes, ShmkitError } from './errors';
import { checkName } from './naming';
import { type InternalCreate, kindName, Segment } from './segment';
import type { Trust } from './trust';

export type OpenHow = 'create' | 'open' | 'openOrCreate';

export interface NamedKind {
  kind: number;
  /** Data bytes to create. */
  size: number;
  /** The least data bytes an existing object of this kind can have (default: `size`). */
  minSize?: number;
  mode: number;
  trust: Trust;
  /** Writes the parameter block and initial state of a new object, before anyone can open it. */
  initialize?: ((segment: Segment) => void) | undefined;
}

/** The segment of a named object of `spec.kind`, created or opened as `how` says. */
export function openSegment(how: OpenHow, name: unknown, spec: NamedKind): Segment {
  const n = checkName(name);
  const c: InternalCreate = { kind: spec.kind, size: spec.size, mode: spec.mode, initialize: spec.initialize, trust: spec.trust };
  const seg = how === 'open' ? Segment.openKind(n, spec.kind, spec.trust) : how === 'create' ? Segment.createKind(n, c) : Segment.openOrCreateKind(n, c);
  const min = spec.minSize ?? spec.size;
  if (seg.size < min) {
    seg.close();
    throw new ShmkitError(ErrorCodes.TOO_SMALL, `open segment "${n}": ${seg.size} data bytes cannot hold a ${kindName(spec.kind)} (${min})`, { segment: n });
  }
  return seg;
}

/** Creates or opens a named object and builds its handle; the segment is closed if `build` throws. */
export function openNamed<H>(how: OpenHow, name: unknown, spec: NamedKind, build: (segment: Segment) => H): H {
  const seg = openSegment(how, name, spec);
  try {
    return build(seg);
  } catch (err) {
    seg.close();
    throw err;
  }
}
