// What the pages take from the classic scripts served beside them (/assets/hls.min.js, /assets/socket.io.min.js):
// globals, typed from the packages' own declarations. Types only: nothing here is served or imported at run time.
import type Hls from 'hls.js';
import type { io } from 'socket.io-client';

declare global {
  interface Window {
    /** hls.js (its UMD bundle), on the pages that load it; absent where the script did not load. */
    Hls?: typeof Hls;
    /** The Socket.IO client, on the pages that load it. */
    io?: typeof io;
  }
}
