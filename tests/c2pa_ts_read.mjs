// Read one image with @trustnxt/c2pa-ts, a TypeScript C2PA implementation independent of c2pa-rs,
// and print its verdict as JSON on stdout (for tests/test_c2pa_interop.py).
//
// Usage: node tests/c2pa_ts_read.mjs [--accept-v2-timestamp-token] IMAGE
//
// --accept-v2-timestamp-token: c2pa-ts 0.9.4 parses every sigTst2 token as a whole RFC 3161
// TimeStampResp, but C2PA 2.x (section 10.3.2.5.4, GEN-CLAIMS-0023) stores only the response's
// timeStampToken (a CMS ContentInfo) in sigTst2, as c2pa-rs does; 0.9.4 then fails the whole
// signature ("Failed to deserialize signature content"). Upstream fixed this by accepting both
// (c2pa-ts PR #546). With this flag the script does the same before c2pa-ts parses the store: a
// bare token is wrapped in a granted TimeStampResp. The unprotected COSE header it sits in is not
// covered by the claim signature, so nothing c2pa-ts verifies is weakened.
import { readFile } from 'node:fs/promises';
import { JPEG, PNG } from '@trustnxt/c2pa-ts/asset';
import { Signature } from '@trustnxt/c2pa-ts/cose';
import { SuperBox } from '@trustnxt/c2pa-ts/jumbf';
import { ManifestStore, ValidationResult } from '@trustnxt/c2pa-ts/manifest';

const args = process.argv.slice(2);
const acceptToken = args.includes('--accept-v2-timestamp-token');
const path = args.find((a) => !a.startsWith('--'));
if (!path) {
    console.error('usage: node tests/c2pa_ts_read.mjs [--accept-v2-timestamp-token] IMAGE');
    process.exit(2);
}

function derLength(n) {
    if (n < 0x80) return [n];
    const bytes = [];
    for (; n > 0; n >>= 8) bytes.unshift(n & 0xff);
    return [0x80 | bytes.length, ...bytes];
}

// A ContentInfo is SEQUENCE { OID, ... }; a TimeStampResp is SEQUENCE { SEQUENCE (PKIStatusInfo), ... }.
function isBareToken(der) {
    if (der[0] !== 0x30) return false;
    const header = der[1] < 0x80 ? 2 : 2 + (der[1] & 0x7f);
    return der[header] === 0x06;
}

let patched = 0;
if (acceptToken) {
    const original = Signature.readTimestamps;
    Signature.readTimestamps = function* (container, version) {
        if (version === 2 && container?.tstTokens?.length) {
            const granted = [0x30, 0x03, 0x02, 0x01, 0x00]; // PKIStatusInfo { status granted(0) }
            container = {
                ...container,
                tstTokens: container.tstTokens.map((token) => {
                    if (!(token?.val instanceof Uint8Array) || !isBareToken(token.val)) return token;
                    patched += 1;
                    const body = [...granted, ...token.val];
                    return { ...token, val: new Uint8Array([0x30, ...derLength(body.length), ...body]) };
                }),
            };
        }
        yield* original.call(this, container, version);
    };
}

const buf = new Uint8Array(await readFile(path));
let asset;
if (JPEG.canRead(buf)) asset = new JPEG(buf);
else if (PNG.canRead(buf)) asset = new PNG(buf);
else {
    console.error('not a JPEG or PNG');
    process.exit(2);
}

const out = { present: false, valid: false, manifests: [], manifestSignatures: {}, statuses: [] };
const jumbf = asset.getManifestJUMBF();
if (jumbf) {
    out.present = true;
    let result;
    try {
        const store = ManifestStore.read(SuperBox.fromBuffer(jumbf));
        out.manifests = store.manifests.map((m) => m.label);
        result = await store.validate(asset);
        // c2pa-ts 0.9.4 checks only the active manifest; check every claim signature in the store
        // too (an ingredient's manifest is signed by its own signer), as its ingredient code does.
        for (const m of store.manifests) {
            const verdict = m.claim && m.signature ? await m.signature.validate(m.claim.getBytes(m.claim)) : null;
            out.manifestSignatures[m.label] = verdict
                ? verdict.statusEntries.some((s) => s.code === 'claimSignature.validated') &&
                  !verdict.statusEntries.some((s) => s.code === 'claimSignature.mismatch')
                : false;
        }
    } catch (e) {
        // A malformed store still gets a well-formed verdict, with the error as a status.
        result = ValidationResult.fromError(e);
    }
    out.valid = result.isValid;
    out.statuses = result.statusEntries.map((s) => ({
        code: s.code,
        success: s.success ?? false,
        url: s.url ?? null,
        explanation: s.explanation ?? null,
    }));
}
// A check passes when its success code is present and no entry reports it failing.
const codes = (ok) => new Set(out.statuses.filter((s) => s.success === ok).map((s) => s.code));
const passed = codes(true);
const failed = codes(false);
out.claimSignatureValid = passed.has('claimSignature.validated') && !failed.has('claimSignature.mismatch');
out.dataHashValid = passed.has('assertion.dataHash.match') && !failed.has('assertion.dataHash.mismatch');
out.timeStampValid = passed.has('timeStamp.trusted') || passed.has('timeStamp.validated');
out.patchedTimestampTokens = patched;
console.log(JSON.stringify(out, null, 2));
