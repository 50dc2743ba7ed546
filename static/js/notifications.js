// Optional desktop notifications (the Notification API) for messages in a conversation that is not
// on screen. Off until the user switches them on: the browser asks for permission only from that click
// (a user gesture), and the choice is kept per user in localStorage.

import { storage } from "./util.js";

export class DesktopNotifications {
  constructor(user) {
    this.key = `im.notify.${user}`;
    this.wanted = storage.get(this.key, false) === true;
  }

  get supported() { return typeof window.Notification === "function"; }

  get permission() { return this.supported ? window.Notification.permission : "denied"; }

  /** Notifications will be shown: switched on here and allowed by the browser. */
  get on() { return this.wanted && this.permission === "granted"; }

  /** Switch on (asking the browser for permission when it has not been asked) or off; returns `on`. */
  async toggle() {
    if (this.on) {
      this.wanted = false;
    } else if (this.supported && this.permission !== "denied") {
      const answer = this.permission === "granted" ? "granted" : await window.Notification.requestPermission();
      this.wanted = answer === "granted";
    }
    storage.set(this.key, this.wanted);
    return this.on;
  }

  /** Show one; `tag` replaces an earlier one of the same conversation; `onClick` runs when it is clicked. */
  show({ title, body, tag, onClick }) {
    if (!this.on) return;
    try {
      const notification = new window.Notification(title, { body, tag });
      notification.onclick = () => {
        window.focus();
        onClick?.();
        notification.close();
      };
    } catch {
      // some browsers allow notifications only from a service worker: then there are none
    }
  }
}

/** The toggle button's look: pressed when on; its tooltip says why it cannot be switched on. */
export function renderNotificationToggle(button, notifications) {
  button.hidden = !notifications.supported;
  button.setAttribute("aria-pressed", String(notifications.on));
  button.title = notifications.permission === "denied" && !notifications.on
    ? "Desktop notifications are blocked in this browser's site settings"
    : notifications.on ? "Desktop notifications are on" : "Turn on desktop notifications";
}
