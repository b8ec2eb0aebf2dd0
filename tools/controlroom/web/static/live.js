// Pink Button live view: an incident's video and voice from the control room's WebSocket
// (tools/controlroom/web/live.py: text {"type": "stream", "mime"}, then binary fragmented MP4:
// init segment, fragments) played in a <video> through Media Source Extensions.
//
//   const player = PinkLive.play(videoElement, "/live/" + alertId, {from: "auto"});
//   player.unmute();   // from a click: browsers only play sound after a user gesture
//   player.close();
//
// from: "auto" (the server sends the pre-roll while the incident is young, else the live
// edge), "start" (everything kept, played at normal speed: review), "live" (newest keyframe).
// Unless from is "start", the player keeps near the live edge: it plays faster while behind
// (so the pre-roll is seen, then live), and jumps to the edge when far behind. The video
// starts muted (autoplay policy); the first click or key press on the page unmutes it.
// Dropped as too slow or disconnected, it reconnects at the live edge.
(function (global) {
  "use strict";

  const DEFAULTS = {
    from: "auto",
    muted: true,            // start muted; unmuteOnGesture turns the sound on
    unmuteOnGesture: true,
    liveWithin: 0.15,       // seconds behind the newest media aimed at (at least
                            // liveFrames Opus frames: the stream message says their length)
    liveFrames: 5,
    catchUpAbove: 1.0,      // further behind: play catchUpRate times faster...
    catchUpRate: 1.5,
    nudgeRate: 1.1,         // ...then a little faster until within liveWithin
    jumpAbove: 15,          // seconds behind: jump to the edge (longer than any pre-roll)
    keepSeconds: 120,       // media kept in the SourceBuffer behind the playhead
    reconnectMs: 1000,
    onState: null,          // called with the state object on every change
  };

  function wsUrl(path) {
    if (/^wss?:/.test(path)) return path;
    const u = new URL(path, global.location.href);
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    return u.toString();
  }

  function play(video, path, options) {
    const opts = Object.assign({}, DEFAULTS, options || {});
    const state = {
      mime: null, from: null, connected: false, ended: false, error: null,
      fragments: 0, bytes: 0, reconnects: 0, dropped: 0, stalls: 0,
    };
    let ws = null, mediaSource = null, sourceBuffer = null, queue = [], closed = false;
    let timer = null, objectUrl = null, started = false;
    let aim = opts.liveWithin;  // seconds behind the edge aimed at, for this stream
    video.muted = opts.muted;
    video.autoplay = true;
    video.playsInline = true;
    const onWaiting = () => { state.stalls += 1; changed(); };
    video.addEventListener("waiting", onWaiting);

    function changed() { if (opts.onState) opts.onState(state); }

    function fail(message) {
      state.error = message;
      changed();
    }

    function connect(from) {
      const url = new URL(wsUrl(path));
      url.searchParams.set("from", from);
      ws = new WebSocket(url.toString());
      ws.binaryType = "arraybuffer";
      ws.onopen = () => { state.connected = true; changed(); };
      ws.onmessage = (ev) => {
        if (typeof ev.data === "string") control(JSON.parse(ev.data));
        else media(new Uint8Array(ev.data));
      };
      ws.onclose = (ev) => {
        state.connected = false;
        changed();
        if (closed || state.ended) return;
        if (ev.code === 1008) return fail("not allowed to watch this incident");
        if (ev.code === 1013) state.dropped += 1;
        state.reconnects += 1;
        setTimeout(() => { if (!closed && !state.ended) connect("live"); }, opts.reconnectMs);
      };
    }

    function control(msg) {
      if (msg.type === "stream") {
        if (!global.MediaSource || !MediaSource.isTypeSupported(msg.mime)) {
          return fail("this browser cannot play " + msg.mime);
        }
        state.mime = msg.mime;
        state.from = msg.from;
        // 60 ms Opus frames (a weak link's setting) arrive in bigger steps: at 0.15 s the
        // player ran dry at the edge and stalled; 5 frames (0.3 s) play steadily.
        aim = Math.max(opts.liveWithin, opts.liveFrames * (msg.audio_frame_ms || 0) / 1000);
        openSource(msg.mime);
      } else if (msg.type === "end") {
        state.ended = true;
        pump();
      } else if (msg.type === "dropped") {
        state.dropped += 1;
      }
      changed();
    }

    // A new stream (first connection or a reconnect) starts a new MediaSource: its init
    // segment and timestamps start a fresh buffer.
    function openSource(mime) {
      queue = [];
      sourceBuffer = null;
      started = false;
      mediaSource = new MediaSource();
      if (objectUrl) URL.revokeObjectURL(objectUrl);
      objectUrl = URL.createObjectURL(mediaSource);
      const ms = mediaSource;
      ms.addEventListener("sourceopen", () => {
        if (ms !== mediaSource) return;
        try {
          sourceBuffer = ms.addSourceBuffer(mime);
          sourceBuffer.mode = "segments"; // timestamps are the device's pts
        } catch (e) {
          return fail("cannot open a SourceBuffer: " + e);
        }
        sourceBuffer.addEventListener("updateend", pump);
        sourceBuffer.addEventListener("error", () => fail("SourceBuffer error"));
        pump();
      });
      video.src = objectUrl;
    }

    function media(bytes) {
      state.fragments += 1;
      state.bytes += bytes.length;
      queue.push(bytes);
      pump();
    }

    // Append everything waiting as one buffer (tens of small fragments a second).
    function pump() {
      if (!sourceBuffer || sourceBuffer.updating) return;
      if (queue.length) {
        let size = 0;
        for (const q of queue) size += q.length;
        const all = new Uint8Array(size);
        let at = 0;
        for (const q of queue) { all.set(q, at); at += q.length; }
        queue = [];
        try {
          sourceBuffer.appendBuffer(all);
        } catch (e) {
          if (e.name === "QuotaExceededError") { trim(true); queue.unshift(all); }
          else fail("append failed: " + e);
        }
        return;
      }
      if (state.ended && mediaSource && mediaSource.readyState === "open") {
        try { mediaSource.endOfStream(); } catch (e) { /* already ended */ }
        return;
      }
      if (trim(false)) return;
      follow();
    }

    // Drop what is far behind the playhead (memory stays bounded on a long incident).
    function trim(urgent) {
      const b = sourceBuffer.buffered;
      if (!b.length || sourceBuffer.updating) return false;
      const keep = urgent ? 5 : opts.keepSeconds;
      const upTo = video.currentTime - keep;
      if (upTo > b.start(0) + 1) {
        sourceBuffer.remove(b.start(0), upTo);
        return true;
      }
      return false;
    }

    // Start at the first buffered media, step over holes, keep near the live edge.
    function follow() {
      if (!sourceBuffer) return;
      const b = sourceBuffer.buffered;
      if (!b.length) return;
      const t = video.currentTime;
      let inside = false;
      for (let i = 0; i < b.length; i++) {
        if (t >= b.start(i) && t < b.end(i)) inside = true;
      }
      if (!inside) {
        for (let i = 0; i < b.length; i++) {
          if (b.start(i) > t) { video.currentTime = b.start(i); break; }
        }
      }
      const edge = b.end(b.length - 1);
      const behind = edge - video.currentTime;
      if (state.from === "live" && !started) {
        // Joined at the newest keyframe: go straight to the edge (the browser decodes from
        // that keyframe up to the picture asked for).
        video.currentTime = Math.max(b.start(b.length - 1), edge - aim);
      }
      started = true;
      if (opts.from !== "start" && !state.ended) {
        let rate = 1;
        if (behind > opts.jumpAbove) video.currentTime = edge - aim;
        else if (behind > opts.catchUpAbove) rate = opts.catchUpRate;
        // Nudged from liveWithin + 0.1 down to liveWithin itself (without the hysteresis
        // the player settled at the upper bound, 0.1 s later than aimed at).
        else if (behind > aim + 0.1 ||
                 (video.playbackRate > 1 && behind > aim)) rate = opts.nudgeRate;
        if (video.playbackRate !== rate) video.playbackRate = rate;
      } else if (video.playbackRate !== 1) {
        video.playbackRate = 1;
      }
      if (video.paused && !video.ended) {
        const p = video.play();
        if (p && p.catch) p.catch(() => { /* autoplay refused: the page's gesture retries */ });
      }
    }

    function unmute() {
      video.muted = false;
      const p = video.play();
      if (p && p.catch) p.catch(() => {});
    }

    function onGesture() {
      unmute();
      global.removeEventListener("pointerdown", onGesture, true);
      global.removeEventListener("keydown", onGesture, true);
    }
    if (opts.unmuteOnGesture && opts.muted) {
      global.addEventListener("pointerdown", onGesture, true);
      global.addEventListener("keydown", onGesture, true);
    }

    timer = setInterval(() => { if (sourceBuffer && !sourceBuffer.updating) follow(); }, 250);
    connect(opts.from);

    return {
      state: state,
      video: video,
      unmute: unmute,
      // Behind the live edge by how many seconds (null before any media).
      latency() {
        if (!sourceBuffer || !sourceBuffer.buffered.length) return null;
        const b = sourceBuffer.buffered;
        return b.end(b.length - 1) - video.currentTime;
      },
      close() {
        closed = true;
        clearInterval(timer);
        video.removeEventListener("waiting", onWaiting);
        global.removeEventListener("pointerdown", onGesture, true);
        global.removeEventListener("keydown", onGesture, true);
        if (ws) ws.close();
        if (objectUrl) URL.revokeObjectURL(objectUrl);
      },
    };
  }

  global.PinkLive = { play: play };
})(window);
