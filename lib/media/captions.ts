/**
 * CEA-608/708 closed captions in H.264, as OBS and broadcast encoders carry them: ATSC A/53 Part 4 `cc_data` in SEI
 * user data registered by ITU-T T.35 (payload type 4): country code 0xB5 (United States), provider 0x0031 (ATSC),
 * user identifier `GA94`. The ladder's encoders copy them from each decoded frame into every rendition (libx264 and
 * NVENC `a53cc`, on by default); what the packager needs to know is whether a stream carries any, to declare them.
 */
/**
 * How a multivariant playlist declares them (rfc8216bis §4.4.6.1, §4.4.6.2): one CLOSED-CAPTIONS rendition, CC1, that
 * every variant names with `CLOSED_CAPTIONS_ATTRIBUTE`. Safari lists it; hls.js names its captions track after it.
 * Not DEFAULT: captions stay off until the viewer (or their accessibility settings, AUTOSELECT) turns them on.
 */
export const CLOSED_CAPTIONS_MEDIA = '#EXT-X-MEDIA:TYPE=CLOSED-CAPTIONS,GROUP-ID="cc",NAME="Captions",AUTOSELECT=YES,INSTREAM-ID="CC1"';
export const CLOSED_CAPTIONS_ATTRIBUTE = ',CLOSED-CAPTIONS="cc"';

const GA94 = Buffer.from([0xb5, 0x00, 0x31, 0x47, 0x41, 0x39, 0x34]);

/**
 * True when `media` (a CMAF fragment, or any H.264 bytes) holds A/53 caption user data. A byte search: the seven bytes
 * cannot be split by emulation prevention (no two zeros in a row), and a false match in coded slice data, 2^-56 per
 * position, does not happen in practice.
 */
export function hasCaptions(media: Buffer): boolean {
  return media.indexOf(GA94) >= 0;
}
