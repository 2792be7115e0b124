/* ear widget: <script src="/ear/widget.js" defer></script> and <div data-ear></div>.
   Options (data attributes): data-mode="identify|similar|hum", data-seconds="8" (hum: 15),
   data-api="/ear/", data-why="off" (no "Why?" picture under a result: it costs the server ~10 ms
   a query). "hum": the visitor hums or sings a melody; the answer is the tracks carrying it.
   No framework, no build step; styles live in a shadow root. */
(() => {
  "use strict";
  const script = document.currentScript;
  const defaultApi = script ? new URL(".", script.src).href : "/ear/";

  const CSS = `
:host{all:initial;display:block;font:15px/1.4 system-ui,sans-serif;color:var(--fg);
  --fg:#1d1d1f;--bg:#fff;--muted:#666;--line:#d0d0d5;--accent:#0b63ce;--ok:#137333;--bad:#b3261e}
:host([data-theme=dark]){--fg:#ececf1;--bg:#1e1f22;--muted:#a0a0aa;--line:#44464d;--accent:#7cb4ff;--ok:#81c995;--bad:#f28b82}
.box{background:var(--bg);border:1px solid var(--line);border-radius:12px;padding:14px;max-width:28rem}
.row{display:flex;gap:8px;align-items:center;flex-wrap:wrap}
button,label.file{font:inherit;border:1px solid var(--line);background:var(--bg);color:var(--fg);
  border-radius:8px;padding:6px 12px;cursor:pointer}
button.primary{background:var(--accent);border-color:var(--accent);color:var(--bg)}
button:focus-visible,label.file:focus-within,input:focus-visible{outline:3px solid var(--accent);outline-offset:2px}
button[disabled]{opacity:.5;cursor:default}
input[type=file]{position:absolute;opacity:0;width:1px;height:1px}
input[type=text]{font:inherit;border:1px solid var(--line);border-radius:8px;padding:5px 8px;background:var(--bg);color:var(--fg)}
.meter{height:6px;background:var(--line);border-radius:3px;overflow:hidden;margin:10px 0 4px}
.meter i{display:block;height:100%;width:0;background:var(--accent);transition:width .08s}
.status{min-height:1.4em;color:var(--muted);margin:6px 0}
.status.error{color:var(--bad)}
.result{display:flex;gap:12px;margin-top:8px}
.result img{width:64px;height:64px;object-fit:cover;border-radius:6px}
img.frame{display:block;width:100%;max-width:320px;margin-top:8px;border-radius:8px}
.why img{display:block;width:100%;max-width:360px;margin-top:8px;border:1px solid var(--line);border-radius:8px}
.title{font-weight:600;font-size:1.05em}
.muted{color:var(--muted);font-size:.9em}
ul{margin:6px 0 0;padding-left:1.1em}
.thanks{color:var(--ok)}
[hidden]{display:none!important}`;

  const HTML = `
<div class="box" part="box">
  <div class="row">
    <button class="primary" data-act="record">Listen</button>
    <button data-act="stop" hidden>Stop</button>
    <label class="file">Choose a file<input type="file" accept="audio/*,video/*"></label>
  </div>
  <div class="hint muted" hidden>Hum or sing the hook, 10–15 seconds of it.</div>
  <div class="meter" hidden><i></i></div>
  <div class="status" role="status" aria-live="polite"></div>
  <div class="answer" hidden>
    <div class="result">
      <img alt="" hidden>
      <div>
        <div class="title"></div>
        <div class="artist"></div>
        <div class="muted where"></div>
        <div class="row" style="margin-top:6px">
          <button data-act="play" hidden>▶ Play from here</button>
          <button data-act="why" aria-expanded="false" hidden>Why?</button>
        </div>
      </div>
    </div>
    <img class="frame" alt="The video at this moment" hidden>
    <div class="why" hidden><img alt="Why it matched: the clip's peaks lined up on the track's"></div>
    <div class="similar" hidden><div class="muted">Sounds like:</div><ul></ul></div>
    <div class="feedback row" style="margin-top:10px">
      <span class="muted">Right?</span>
      <button data-act="right">Yes</button>
      <button data-act="wrong">No</button>
      <input type="text" placeholder="It was…" aria-label="What it really was">
      <button data-act="said">Send</button>
    </div>
  </div>
  <audio preload="none" hidden></audio>
</div>`;

  const LOOK_MS = 1500;  // how often what has been heard so far is sent while listening
  // The first match ends the listening: ear answers a clip of a few seconds only on evidence that
  // `ear eval --listen` never saw name a wrong track (docs/seeing.md; it replays the same rule).
  const fmt = (s) => `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, "0")}`;

  function themeOf(el) {
    // Follow the page: its background if it has one, else the reader's system preference.
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
      const m = getComputedStyle(node).backgroundColor.match(/[\d.]+/g);
      if (m && (m.length < 4 || +m[3] > 0)) {
        const [r, g, b] = m.map(Number);
        return 0.299 * r + 0.587 * g + 0.114 * b < 128 ? "dark" : "light";
      }
    }
    return matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }

  function pickMime() {
    if (!window.MediaRecorder) return null;
    for (const t of ["audio/webm;codecs=opus", "audio/webm", "audio/mp4;codecs=mp4a.40.2", "audio/mp4"]) {
      if (MediaRecorder.isTypeSupported(t)) return t;
    }
    return "";
  }

  class EarWidget {
    constructor(host) {
      this.host = host;
      this.uploads = 0;
      this.api = new URL(host.dataset.api || defaultApi, location.href).href.replace(/\/?$/, "/");
      this.mode = ["similar", "hum"].includes(host.dataset.mode) ? host.dataset.mode : "identify";
      this.explains = this.mode !== "similar" && host.dataset.why !== "off";
      this.seconds = Math.min(Math.max(+host.dataset.seconds || (this.mode === "hum" ? 15 : 8), 3), 30);
      const root = host.attachShadow({ mode: "open" });
      root.innerHTML = `<style>${CSS}</style>${HTML}`;
      this.$ = (sel) => root.querySelector(sel);
      if (this.mode === "hum") {
        this.$("[data-act=record]").textContent = "Hum";
        this.$(".hint").hidden = false;
        this.$(".similar .muted").textContent = "Also close:";
      }
      host.setAttribute("data-theme", themeOf(host.parentElement || host));
      matchMedia("(prefers-color-scheme: dark)").addEventListener?.("change", () =>
        host.setAttribute("data-theme", themeOf(host.parentElement || host)));
      root.addEventListener("click", (e) => {
        const act = e.target.closest("button")?.dataset.act;
        if (act) this[act]();
      });
      this.$("input[type=file]").addEventListener("change", (e) => {
        const file = e.target.files[0];
        if (file) this.send(file, file.name);
        e.target.value = "";
      });
    }

    say(text, error = false) {
      const s = this.$(".status");
      s.textContent = text;
      s.classList.toggle("error", error);
    }

    busy(on) {
      this.$("[data-act=record]").disabled = on;
      this.$("input[type=file]").disabled = on;
    }

    async record() {
      if (!window.isSecureContext) {
        return this.say("The microphone needs a secure (https://) page. Choose a file instead.", true);
      }
      if (!navigator.mediaDevices?.getUserMedia || pickMime() === null) {
        return this.say("This browser cannot record audio. Choose a file instead.", true);
      }
      let stream;
      try {
        // The browser's voice processing removes the very peaks a fingerprint needs.
        stream = await navigator.mediaDevices.getUserMedia({
          audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
        });
      } catch (err) {
        const name = err && err.name;
        if (name === "NotAllowedError" || name === "SecurityError") {
          return this.say("Microphone permission was denied. Allow it in the address bar, or choose a file.", true);
        }
        if (name === "NotFoundError" || name === "OverconstrainedError") {
          return this.say("No microphone was found. Choose a file instead.", true);
        }
        return this.say(`The microphone could not start (${name || err}).`, true);
      }
      this.busy(true);
      this.$(".answer").hidden = true;
      const mime = pickMime();
      const recorder = new MediaRecorder(stream, mime ? { mimeType: mime } : undefined);
      const chunks = [];
      recorder.ondataavailable = (e) => e.data.size && chunks.push(e.data);
      const ctx = new (window.AudioContext || window.webkitAudioContext)();
      const analyser = ctx.createAnalyser();
      analyser.fftSize = 512;
      ctx.createMediaStreamSource(stream).connect(analyser);
      const buf = new Float32Array(analyser.fftSize);
      const bar = this.$(".meter i");
      this.$(".meter").hidden = false;
      this.$("[data-act=stop]").hidden = false;
      const started = performance.now();
      let timer;
      const done = new Promise((resolve) => (recorder.onstop = resolve));
      this.stop = () => recorder.state !== "inactive" && recorder.stop();
      const tick = () => {
        analyser.getFloatTimeDomainData(buf);
        let peak = 0;
        for (const v of buf) peak = Math.max(peak, Math.abs(v));
        bar.style.width = `${Math.min(100, Math.round(peak * 140))}%`;
        const left = this.seconds - (performance.now() - started) / 1000;
        this.say(`Listening… ${Math.max(0, Math.ceil(left))} s`);
        if (left <= 0) this.stop();
        else timer = requestAnimationFrame(tick);
      };
      recorder.start(250);
      tick();
      const type = () => recorder.mimeType || mime || "audio/webm";
      const name = () => (type().includes("mp4") ? "clip.mp4" : "clip.webm");
      this.uploads = 0;
      const early = this.mode === "identify" ? this.answerWhileListening(recorder, chunks, type, name, done) : null;
      await done;
      cancelAnimationFrame(timer);
      stream.getTracks().forEach((t) => t.stop());
      ctx.close();
      this.$(".meter").hidden = true;
      this.$("[data-act=stop]").hidden = true;
      const answered = await early;
      if (answered) {
        this.busy(false);
        return this.show(answered);
      }
      await this.send(new Blob(chunks, { type: type() }), name());
    }

    stop() {}

    // An answer while still listening: every LOOK_MS what has been heard so far goes up as a
    // request of its own, which the one server worker answers between other visitors' (a single
    // request streamed for the whole recording would hold that worker all along). The first
    // match stops the recording; what resolves is that answer, or null when none came. Each is
    // `partial`: ear logs it only if it matched, and keeps none of its audio (the picture of why
    // costs ear time only when there is a match).
    async answerWhileListening(recorder, chunks, type, name, done) {
      while (recorder.state === "recording") {
        await Promise.race([new Promise((resolve) => setTimeout(resolve, LOOK_MS)), done]);
        if (recorder.state !== "recording") return null;
        const body = await this.ask(new Blob(chunks, { type: type() }), name(), true).catch(() => null);
        if (body?.matches?.length) {
          if (recorder.state === "recording") recorder.stop();
          return body;
        }
      }
      return null;
    }

    async send(blob, name) {
      this.busy(true);
      this.say("Looking it up…");
      let body;
      try {
        body = await this.ask(blob, name);
      } catch (err) {
        this.busy(false);
        const offline = err instanceof TypeError;
        return this.say(offline ? "Network error: ear could not be reached." : err.message, true);
      }
      this.busy(false);
      this.show(body);
    }

    // One upload to ear; its answer, or an error with ear's message. `data-uploads` on the
    // element counts them (what a page or a test may want to know).
    async ask(blob, name, partial = false) {
      const form = new FormData();
      form.append("audio", blob, name);
      this.host.dataset.uploads = String(++this.uploads);
      const query = new URLSearchParams({
        ...(this.explains ? { explain: "1" } : {}), ...(partial ? { partial: "1" } : {}) });
      const res = await fetch(this.api + this.mode + (String(query) ? `?${query}` : ""), { method: "POST", body: form });
      const body = await res.json().catch(() => ({}));
      if (!res.ok) throw new Error(body.error?.message || `The service answered ${res.status}.`);
      this.base = res.url || this.api;  // where ear answered, after any redirect
      return body;
    }

    show(body) {
      // A new answer: the last one's playback and picture go; `data-heard` says how many seconds
      // of audio this answer rests on.
      const audio = this.$("audio");
      audio.pause();
      audio.ontimeupdate = null;
      delete audio.dataset.src;
      this.$("img.frame").hidden = true;
      this.host.dataset.heard = String(body.query_seconds ?? "");
      if (this.mode === "hum") {
        this.showHum(body.matches || [], body.query_id);
        return this.showWhy(body.explain?.svg);
      }
      const best = this.mode === "similar" ? body.identified : body.matches?.[0];
      const similar = this.mode === "similar" ? body.matches || [] : [];
      this.answer = best || null;
      this.queryId = body.query_id;  // feedback is on this answer, once
      this.$(".answer").hidden = !best && !similar.length;
      this.$(".feedback").hidden = !best;
      this.$(".result").hidden = !best;
      if (!best && !similar.length) return this.say("No match: this doesn't sound like anything in the catalog.");
      if (best) {
        const t = best.track;
        const pct = Math.round(best.confidence * 100);
        const sure = pct >= 90 ? "sure" : pct >= 60 ? "fairly sure" : "not sure";
        this.$(".title").textContent = t.title;
        this.$(".artist").textContent = t.artist || "";
        this.$(".where").textContent = `at ${fmt(best.offset_s)} · ${sure} (${pct}%)`;
        const img = this.$(".result img");
        img.hidden = !t.cover_url;
        if (t.cover_url) img.src = this.link(t.cover_url);
        this.showFrame(best.offset_s);
        this.showWhy(body.explain?.svg);
        this.$("[data-act=play]").hidden = !t.audio_url;
        this.say(`Found: ${t.title}${t.artist ? ` by ${t.artist}` : ""}, at ${fmt(best.offset_s)} (${sure}).`);
      } else {
        this.say("Not recognised; here is what sounds like it.");
      }
      this.showSimilar(similar);
      if (best && this.mode === "identify") {
        // "More like this", when ear has embeddings for it; the answer does not wait for it.
        fetch(`${this.api}tracks/${best.track.id}/similar?k=3`)
          .then((r) => (r.ok ? r.json() : { matches: [] }))
          .then((b) => this.answer === best && this.showSimilar(b.matches || []))
          .catch(() => {});
      }
    }

    // A hum's answer: the best track with the span it follows (▶ plays from its start), the
    // other close ones below it.
    showHum(matches, queryId) {
      const best = matches[0];
      this.answer = best ? { ...best, offset_s: best.start_s, confidence: best.score } : null;
      this.queryId = queryId;
      this.$(".answer").hidden = !best;
      if (!best) return this.say("No match: no track here carries that melody.");
      const t = best.track;
      this.$(".feedback").hidden = false;
      this.$(".result").hidden = false;
      this.$(".title").textContent = t.title;
      this.$(".artist").textContent = t.artist || "";
      this.$(".where").textContent = `the melody at ${fmt(best.start_s)}–${fmt(best.end_s)} · ${Math.round(best.score * 100)}% alike`;
      const img = this.$(".result img");
      img.hidden = !t.cover_url;
      if (t.cover_url) img.src = this.link(t.cover_url);
      this.showFrame(best.start_s);
      this.$("[data-act=play]").hidden = !t.audio_url;
      this.say(`Found: ${t.title}${t.artist ? ` by ${t.artist}` : ""}, at ${fmt(best.start_s)}.`);
      this.showSimilar(matches.slice(1));
    }

    // A video track's picture of the moment (`frame_url`), asked again at each new second
    // while ▶ plays; hidden for a track without one.
    showFrame(seconds) {
      const frame = this.$("img.frame");
      const url = this.answer?.frame_url;
      frame.hidden = !url;
      if (!url) return;
      const at = new URL(this.link(url));
      at.searchParams.set("t", String(Math.round(seconds)));
      if (frame.src !== at.href) frame.src = at.href;
    }

    // The picture of why it matched (SVG text from ?explain=1), behind the "Why?" toggle; as an
    // image, so that nothing in it can run.
    showWhy(svg) {
      const button = this.$("[data-act=why]");
      button.hidden = !svg;
      button.setAttribute("aria-expanded", "false");
      this.$(".why").hidden = true;
      if (svg) this.$(".why img").src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(svg)}`;
    }

    why() {
      const open = this.$(".why").hidden;
      this.$(".why").hidden = !open;
      this.$("[data-act=why]").setAttribute("aria-expanded", String(open));
    }

    showSimilar(similar) {
      const list = this.$(".similar ul");
      list.replaceChildren(...similar.map((m) => {
        const li = document.createElement("li");
        li.textContent = `${m.track.title}${m.track.artist ? ` — ${m.track.artist}` : ""}`;
        return li;
      }));
      this.$(".similar").hidden = !similar.length;
    }

    // ear's links are paths from its root (absolute only with EAR_PUBLIC_URL): they belong to
    // the address that answered, not to the page the widget is on.
    link(url) {
      return new URL(url, this.base || this.api).href;
    }

    play() {
      const t = this.answer?.track;
      if (!t?.audio_url) return;
      const audio = this.$("audio");
      if (!audio.paused) return audio.pause();
      const src = this.link(t.audio_url);
      if (audio.dataset.src !== src) {
        audio.src = src;
        audio.dataset.src = src;
        audio.currentTime = this.answer.offset_s;
        audio.ontimeupdate = () => this.showFrame(audio.currentTime);
      }
      audio.play().catch(() => this.say("The track could not be played.", true));
    }

    right() { this.feedback({ verdict: "right" }); }
    wrong() { this.feedback({ verdict: "wrong" }); }
    said() {
      const text = this.$("input[type=text]").value.trim();
      if (text) this.feedback({ verdict: "wrong", actual: text });
    }

    async feedback(fields) {
      const a = this.answer;
      try {
        const res = await fetch(this.api + "feedback", {
          method: "POST", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ query_id: this.queryId, track_id: a?.track.id ?? null,
            offset_s: a?.offset_s ?? null, confidence: a?.confidence ?? null, ...fields }),
        });
        if (!res.ok) {
          const body = await res.json().catch(() => ({}));
          throw new Error(body.error?.message || `The feedback was refused (${res.status}).`);
        }
        this.$(".feedback").hidden = true;
        this.say("Thank you — noted.");
      } catch (err) {
        this.say(err instanceof TypeError ? "Network error: the feedback was not sent." : err.message, true);
      }
    }
  }

  const start = () => document.querySelectorAll("[data-ear]").forEach((el) => {
    if (!el.shadowRoot) el.ear = new EarWidget(el);
  });
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
