// kvmctl web console: the VM's serial console (xterm.js) and VNC display (noVNC), each over
// a WebSocket the daemon proxies, opened with a single-use ticket (ADR 0013). Both libraries
// come from pinned npm packages embedded in the daemon (/ui/vendor/).

const enc = encodeURIComponent;

function wsUrl(path) {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${path}`;
}

// Words for a console that closed before it opened (the browser hides the HTTP answer).
const REFUSED = {
  serial: 'the serial console takes one viewer at a time: close it where it is open (another tab or window, `kvmctl vm console`) and try again',
  vnc: 'the VNC display could not be opened (too many sessions on this VM or of yours, or the VM stopped)',
};

function cssOnce(href) {
  if (document.querySelector(`link[href="${href}"]`)) return;
  const l = document.createElement('link');
  l.rel = 'stylesheet';
  l.href = href;
  document.head.append(l);
}

// A character as keys on a US keyboard: [keysym, KeyboardEvent.code or null, shift].
// QEMU takes scancodes (noVNC's QEMU extended key events) where it can, so shifted
// characters need the Shift key pressed around them.
const US_ROWS = [
  ['`1234567890-=', '~!@#$%^&*()_+', ['Backquote', 'Digit1', 'Digit2', 'Digit3', 'Digit4', 'Digit5', 'Digit6', 'Digit7', 'Digit8', 'Digit9', 'Digit0', 'Minus', 'Equal']],
  ['[]\\', '{}|', ['BracketLeft', 'BracketRight', 'Backslash']],
  [";'", ':"', ['Semicolon', 'Quote']],
  [',./', '<>?', ['Comma', 'Period', 'Slash']],
];
function usKey(ch) {
  if (ch === '\n' || ch === '\r') return [0xff0d, 'Enter', false];
  if (ch === '\t') return [0xff09, 'Tab', false];
  if (ch === ' ') return [0x20, 'Space', false];
  if (/^[a-z]$/.test(ch)) return [ch.charCodeAt(0), `Key${ch.toUpperCase()}`, false];
  if (/^[A-Z]$/.test(ch)) return [ch.charCodeAt(0), `Key${ch}`, true];
  for (const [plain, shifted, codes] of US_ROWS) {
    if (plain.includes(ch)) return [ch.charCodeAt(0), codes[plain.indexOf(ch)], false];
    if (shifted.includes(ch)) return [ch.charCodeAt(0), codes[shifted.indexOf(ch)], true];
  }
  const cp = ch.codePointAt(0);
  return [cp < 0x100 ? cp : 0x01000000 + cp, null, false];
}

// Opens a console of `kind` for VM `name` in `screen`; `status(text, state)` reports its
// state. `ticket` asks the API for a ticket. Returns { close, paste(text), ctrlAltDel() }.
export async function openConsole(kind, name, screen, status, ticket) {
  status('connecting', 'connecting');
  let lib;
  try {
    lib = kind === 'serial'
      ? await import('/ui/vendor/xterm/lib/xterm.mjs')
      : await import('/ui/vendor/novnc/core/rfb.js');
  } catch {
    status('the consoles were not built into this daemon: run scripts/web-assets.sh and build kvmctl again', 'error');
    return { close() {}, paste() {}, ctrlAltDel() {} };
  }
  const t = await ticket(name, kind);
  const url = wsUrl(t.path);
  if (kind === 'serial') {
    cssOnce('/ui/vendor/xterm/css/xterm.css');
    const term = new lib.Terminal({ convertEol: false, cursorBlink: true, scrollback: 5000, fontSize: 14 });
    term.open(screen);
    window.kvmctlTerm = term; // for tests and the browser's console
    const ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    let opened = false;
    const text = new TextEncoder();
    ws.onopen = () => { opened = true; status('connected', 'connected'); term.focus(); };
    ws.onmessage = (ev) => {
      screen.dataset.bytes = String((Number(screen.dataset.bytes) || 0) + ev.data.byteLength);
      term.write(new Uint8Array(ev.data));
    };
    ws.onclose = () => status(opened ? 'closed' : `not opened: ${REFUSED.serial}`, opened ? 'closed' : 'error');
    term.onData((d) => { if (ws.readyState === WebSocket.OPEN) ws.send(text.encode(d)); });
    return {
      close() { ws.close(); term.dispose(); if (window.kvmctlTerm === term) window.kvmctlTerm = null; },
      paste(s) { if (ws.readyState === WebSocket.OPEN) ws.send(text.encode(s.replace(/\r?\n/g, '\r'))); },
      ctrlAltDel() {},
    };
  }
  const rfb = new lib.default(screen, url, { shared: true });
  rfb.scaleViewport = true;
  rfb.focusOnClick = true;
  window.kvmctlRfb = rfb;
  let opened = false;
  rfb.addEventListener('connect', () => { opened = true; status('connected', 'connected'); rfb.focus(); });
  rfb.addEventListener('disconnect', (e) => status(opened ? (e.detail.clean ? 'closed' : 'connection lost') : `not opened: ${REFUSED.vnc}`, opened ? 'closed' : 'error'));
  rfb.addEventListener('securityfailure', (e) => status(`refused: ${e.detail.reason || 'security failure'}`, 'error'));
  return {
    close() { try { rfb.disconnect(); } catch { /* already closed */ } },
    paste(s) {
      for (const ch of s) {
        const [sym, code, shift] = usKey(ch);
        if (shift) rfb.sendKey(0xffe1, 'ShiftLeft', true);
        rfb.sendKey(sym, code, true);
        rfb.sendKey(sym, code, false);
        if (shift) rfb.sendKey(0xffe1, 'ShiftLeft', false);
      }
    },
    ctrlAltDel() { rfb.sendCtrlAltDel(); },
  };
}
