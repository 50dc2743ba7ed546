// Group chats: listed from the server's groups API when it has one (features.groups); without it the
// "New group" button stays hidden and group conversations that arrive in the inbox still display.

import { h } from "./util.js";
import { avatar } from "./views.js";

const GROUPS_REFRESH_MS = 60000;
const $ = (id) => document.getElementById(id);

/** A group id from a conversation id "g:<id>". */
export function groupIdOf(convId) {
  return convId.startsWith("g:") ? convId.slice(2) : null;
}

export class Groups {
  constructor(session) {
    this.session = session;
    this.enabled = Boolean(session.features.groups);
    this.byId = new Map(); // group id -> {id, name, owner, members, admins}
    this.timer = null;
    Groups.current = this; // the dialogs route to the running session's groups
    if (this.enabled) this.wire();
  }

  async start() {
    $("new-group-button").hidden = !this.enabled;
    if (this.enabled) await this.refresh();
  }

  stop() {
    clearTimeout(this.timer);
  }

  wire() {
    if (Groups.wired) return; // the dialogs outlive sessions: wire them once, route to the current one
    Groups.wired = true;
    const dialog = $("group-dialog");
    $("new-group-button").addEventListener("click", () => {
      $("group-error").textContent = "";
      $("group-form").reset();
      dialog.showModal();
      $("group-name").focus();
    });
    $("group-cancel").addEventListener("click", () => dialog.close());
    $("group-form").addEventListener("submit", (event) => {
      event.preventDefault();
      Groups.current?.create($("group-name").value, $("group-members").value);
    });
    $("members-button").addEventListener("click", () => Groups.current?.showMembers());
    $("member-add-button").addEventListener("click", () => Groups.current?.addMember($("member-add").value));
    $("leave-group").addEventListener("click", () => Groups.current?.leave());
  }

  get api() { return this.session.api; }

  normalize(raw) {
    const id = String(raw.group ?? raw.id ?? raw.group_id ?? "");
    if (!id) return null;
    return {
      id, name: String(raw.name ?? id), owner: raw.owner ?? null,
      members: Array.isArray(raw.members) ? raw.members.map((m) => (typeof m === "string" ? m : m.user)) : null,
      admins: Array.isArray(raw.admins) ? raw.admins : [],
      count: raw.member_count ?? raw.members?.length ?? null,
    };
  }

  remember(raw) {
    const group = this.normalize(raw);
    if (!group) return null;
    const old = this.byId.get(group.id);
    if (old && !group.members) group.members = old.members;
    this.byId.set(group.id, group);
    const convId = `g:${group.id}`;
    if (!this.session.state.staysClosed(convId)) this.nameConversation(convId);
    return group;
  }

  /** Give the group's conversation the group's name (creating it when new). */
  nameConversation(convId) {
    const group = this.byId.get(groupIdOf(convId));
    const conv = this.session.state.conv(convId);
    if (group && conv.title !== group.name) {
      conv.title = group.name;
      this.session.state.scheduleSave();
    }
  }

  async refresh() {
    clearTimeout(this.timer);
    try {
      const reply = await this.api.get("/api/v1/groups");
      const list = Array.isArray(reply) ? reply : reply?.groups ?? [];
      for (const raw of list) this.remember(raw);
      this.session.renderConversations();
      if (this.session.activeId?.startsWith("g:")) this.session.renderHeader();
    } catch {
      // keep what we know
    }
    if (!this.session.ended) this.timer = setTimeout(() => this.refresh(), GROUPS_REFRESH_MS);
  }

  /** A group conversation appeared in the inbox: learn its name if we do not know it. */
  noticeConversation(convId) {
    const id = groupIdOf(convId);
    if (!this.enabled || !id) return;
    if (this.byId.has(id)) this.nameConversation(convId);
    else this.ensureLoaded(convId);
  }

  async ensureLoaded(convId) {
    const id = groupIdOf(convId);
    if (!this.enabled || !id) return;
    try {
      const raw = await this.api.get(`/api/v1/groups/${encodeURIComponent(id)}`);
      this.remember(raw);
      this.session.renderConversations();
      if (this.session.activeId === convId) this.session.renderHeader();
    } catch {
      // not a member any more, or no such group: the conversation keeps its cached messages
    }
  }

  subtitle(convId) {
    const group = this.byId.get(groupIdOf(convId));
    const n = group?.members?.length ?? group?.count;
    return n ? `${n} members` : "group";
  }

  async create(name, membersText) {
    const error = $("group-error");
    const members = membersText.split(/[\s,;]+/).map((m) => m.trim().toLowerCase()).filter(Boolean);
    if (!name.trim()) { error.textContent = "Give the group a name."; return; }
    try {
      const raw = await this.api.post("/api/v1/groups", { name: name.trim(), members });
      const group = this.remember(raw);
      $("group-dialog").close();
      if (group) this.session.open(`g:${group.id}`);
    } catch (err) {
      error.textContent = err.message || "Could not create the group.";
    }
  }

  async showMembers() {
    const convId = this.session.activeId;
    const id = groupIdOf(convId ?? "");
    if (!id) return;
    $("members-error").textContent = "";
    await this.ensureLoaded(convId);
    this.renderMembers(id);
    $("members-dialog").showModal();
  }

  renderMembers(id) {
    const group = this.byId.get(id);
    $("members-list").replaceChildren(...(group?.members ?? []).map((user) => h("li", {},
      avatar(user, { small: true, online: this.session.online.has(user) }), user,
      h("span", { class: "role" }, user === group.owner ? "owner" : group.admins.includes(user) ? "admin" : ""))));
  }

  async addMember(user) {
    const id = groupIdOf(this.session.activeId ?? "");
    const member = user.trim().toLowerCase();
    if (!id || !member) return;
    try {
      await this.api.post(`/api/v1/groups/${encodeURIComponent(id)}/members`, { members: [member] });
      $("member-add").value = "";
      await this.ensureLoaded(`g:${id}`);
      this.renderMembers(id);
    } catch (err) {
      $("members-error").textContent = err.message;
    }
  }

  async leave() {
    const convId = this.session.activeId;
    const id = groupIdOf(convId ?? "");
    if (!id) return;
    try {
      await this.api.delete(`/api/v1/groups/${encodeURIComponent(id)}/members/${encodeURIComponent(this.session.me)}`);
      $("members-dialog").close();
      this.byId.delete(id);
      this.session.state.conversations.delete(convId);
      this.session.state.scheduleSave();
      this.session.back();
    } catch (err) {
      $("members-error").textContent = err.message;
    }
  }
}
