// Drives a local server's ACE-Step 1.5 endpoints with the unmodified @fal-ai/client (npm) and prints
// what it saw as JSON. The client always targets https://queue.fal.run/...; its documented
// `requestMiddleware` hook points each request at the local server instead.
// Usage: node fal_js15_driver.mjs <client package dir> <server base URL> <key> <wav file>
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const [clientDir, base, key, wav] = process.argv.slice(2);
const require = createRequire(path.join(clientDir, "package.json"));
const { fal } = require("@fal-ai/client");

fal.config({
  credentials: key,
  requestMiddleware: async (request) => ({
    ...request,
    url: request.url.replace(/^https:\/\/(queue\.)?fal\.run/, base),
  }),
});

const APP = "fal-ai/ace-step-1.5";
const audio = "data:audio/wav;base64," + readFileSync(wav).toString("base64");
const report = {};
const statuses = [];
const music = await fal.subscribe(APP, {
  input: { prompt: "dreamy synth-pop", lyrics: "[verse]\nneon nights", duration: 1.0, num_inference_steps: 2, seed: 7 },
  logs: true,
  onQueueUpdate: (update) => statuses.push(update.status),
});
report.text_to_music = music.data;
report.request_id = music.requestId;
report.statuses = statuses;
report.repaint = (await fal.subscribe(`${APP}/repaint`, {
  input: { source_audio_url: audio, start_time: 0.2, end_time: 0.6, prompt: "brass section", lyrics: "[verse]\nla la",
           repaint_strength: 0.8, seed: 8, vocal_language: "en", num_inference_steps: 2 },
})).data;
report.cover = (await fal.subscribe(`${APP}/cover`, {
  input: { source_audio_url: audio, reference_audio_url: audio, prompt: "acoustic folk", cover_strength: 0.7, seed: 9,
           num_inference_steps: 2 },
})).data;
try {
  await fal.subscribe(`${APP}/repaint`, { input: { source_audio_url: audio, start_time: 30, prompt: "x" } });
  report.invalid = "accepted";
} catch (error) {
  report.invalid = { status: error.status, loc: error.body?.detail?.[0]?.loc };
}
console.log("REPORT " + JSON.stringify(report));
