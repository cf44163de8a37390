// The WhatsApp simulator page of the local stack, in Debian's headless Chromium: a person types
// a message, and sees the bot's reply bubble and its ticks; then attaches a photo (made by the
// page's canvas) with a caption, and sees the offline stand-in's answer naming it; then asks the
// example shop about an order, and sees the tool call in the conversation before the answer
// the shop's data made. Run by tests/browser/run.sh, which
// provides the local stack's binary, a moto server and Chromium. A screenshot is written to
// target/simulator.png.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const binary = process.env.LOCAL_STACK_BIN;
const endpoint = process.env.AWS_ENDPOINT_URL;

async function startLocalStack() {
  assert.ok(binary, "LOCAL_STACK_BIN must name the local-stack binary (tests/browser/run.sh sets it)");
  assert.ok(endpoint, "AWS_ENDPOINT_URL must point at moto (tests/with-moto.sh sets it)");
  const stack = spawn(binary, ["--port", "0", "--aws-endpoint", endpoint, "--stack-name", `browser-${process.pid}`], {
    env: { ...process.env, LLM_API_KEY: "", LLM_BASE_URL: "" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: stack.stdout });
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the local stack did not start within 60 s")), 60_000);
    lines.on("line", (line) => {
      const match = line.match(/WhatsApp simulator: (\S+?)\/? /);
      if (match) { clearTimeout(timer); resolve(match[1]); }
    });
    stack.on("exit", (code) => reject(new Error(`the local stack exited with ${code}`)));
  });
  return { stack, url };
}

test("a message typed in the simulator gets a reply bubble with read ticks; an attached photo is seen", async () => {
  const { stack, url } = await startLocalStack();
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1100, height: 700 } });
    await page.goto(url + "/");
    await page.waitForFunction(() => document.getElementById("banner").textContent.includes("stand-in"));
    assert.match(await page.textContent("#banner"), /Offline LLM stand-in/);

    await page.fill("#text", "Hello from the browser");
    await page.click("#send");
    await page.waitForSelector(".bubble.user:has-text('Hello from the browser')", { timeout: 30_000 });
    const reply = await page.waitForSelector(".bubble.bot", { timeout: 60_000 });
    assert.match(await reply.textContent(), /\[offline stand-in\] You said: "Hello from the browser"\./);
    // Meta's status webhooks arrive: sent, delivered, read.
    await page.waitForSelector(".bubble.bot .ticks.read", { timeout: 30_000 });
    assert.equal((await page.textContent(".bubble.bot .ticks")).trim(), "✓✓ read");

    // A photo, attached with a caption: the local stack keeps it, the processor downloads it
    // through the Graph stand-in's media flow, and the offline stand-in says what it received.
    const png = Buffer.from(await page.evaluate(() => {
      const canvas = Object.assign(document.createElement("canvas"), { width: 8, height: 8 });
      const context = canvas.getContext("2d");
      context.fillStyle = "#c0392b"; context.fillRect(0, 0, 8, 8);
      return canvas.toDataURL("image/png").split(",")[1];
    }), "base64");
    await page.fill("#text", "what colour is this?");
    await page.setInputFiles("#file", { name: "red.png", mimeType: "image/png", buffer: png });
    await page.waitForSelector(`.bubble.user:has-text('image red.png (${png.length} bytes)')`, { timeout: 30_000 });
    const answer = await page.waitForSelector(".bubble.bot:has-text('[image]')", { timeout: 60_000 });
    assert.match(await answer.textContent(),
      new RegExp(`You said: "\\[image\\] what colour is this\\?"\\. I received an image \\(image/png, ${png.length} bytes\\)\\.`));

    // The example shop: the banner says how to try it; an order question shows the call of
    // its API as a 🔧 line in the conversation, then the answer made from what it gave.
    assert.match(await page.textContent("#example"), /Where is my order A-1001\?/);
    await page.fill("#text", "Where is my order A-1001?");
    await page.click("#send");
    const tool = await page.waitForSelector(".bubble.tool", { timeout: 60_000 });
    assert.match(await tool.textContent(), /^🔧 order_status · 200 · \d+ ms · /);
    const shop = await page.waitForSelector(".bubble.bot:has-text('order_status answered')", { timeout: 60_000 });
    assert.match(await shop.textContent(), /"status":"shipped"/);
    const order = await page.$$eval(".bubble", (all) => all.map((b) => b.className));
    assert.ok(order.indexOf("bubble tool") < order.lastIndexOf("bubble bot"), order.join(", "));

    await page.screenshot({ path: path.join(root, "target", "simulator.png") });
  } finally {
    await browser.close();
    stack.kill("SIGINT");
    await Promise.race([once(stack, "exit"), new Promise((r) => setTimeout(r, 5_000))]);
    stack.kill("SIGKILL");
  }
});
