'use strict';
// node read_pst.js FILE.pst: what npm's pst-extractor (a port of java-libpst) finds in a PST,
// as JSON on stdout: every folder (its path from the root folder), its messages with their
// envelope, bodies, recipients and attachments (SHA-256 and size of the data; attached
// messages read the same way, recursively). The PST tests compare this with the source.
const crypto = require('crypto');
const { PSTFile } = require('pst-extractor');

function bytesOf(stream) {
  if (!stream) return null;
  const buffer = Buffer.alloc(stream.length.toNumber());
  if (buffer.length) stream.readCompletely(buffer);
  return buffer;
}

function iso(value) {
  return value ? value.toISOString() : null;
}

function attachment(message, index) {
  const a = message.getAttachment(index);
  const out = {
    name: a.longFilename || a.filename, short_name: a.filename, mime_type: a.mimeTag,
    method: a.attachMethod, content_id: a.contentId,
  };
  if (a.attachMethod === 5) {
    // pst-extractor 1.12 returns null for every attached message: embeddedPSTMessage wants a
    // descriptor node, and attachments never get one (java-libpst passes the unused null on).
    // Lending the message's own node reads the attached message as java-libpst does.
    if (!a.descriptorIndexNode) a.descriptorIndexNode = message.descriptorIndexNode;
    const inner = a.embeddedPSTMessage;
    out.embedded = inner ? describe(inner) : null;
  } else {
    const data = bytesOf(a.fileInputStream);
    out.size = data ? data.length : null;
    out.sha256 = data ? crypto.createHash('sha256').update(data).digest('hex') : null;
  }
  return out;
}

// getRecipient(i) and getAttachment(i) read every row of their table for each call (a
// minute for a message with 500 recipients); the rows do not change, so read them once.
function remember(table) {
  if (!table) return;
  const rows = table.getItems();
  table.getItems = () => rows;
}

// PtypMultipleString as [MS-PST] stores it: count, offsets (little-endian), UTF-16LE strings.
// (pst-extractor's own colorCategories reads the count as one byte and the offsets big-endian.)
function multipleStrings(item) {
  if (!item || !item.data || item.data.length < 4) return null;
  const data = Buffer.from(item.data);
  const count = data.readUInt32LE(0);
  const offsets = [];
  for (let i = 0; i < count; i++) offsets.push(data.readUInt32LE(4 + 4 * i));
  offsets.push(data.length);
  return offsets.slice(0, count).map((start, i) => data.subarray(start, offsets[i + 1]).toString('utf16le'));
}

// What the archive-metadata contract puts in a message's properties: the named ones are
// looked up by name in the store's name-to-id map, as pst-extractor resolves names.
function archiveMetadata(message) {
  const named = (name) => PSTFile.getPublicStringToIdMapItem(name);
  const items = message.pstTableItems;
  const keywords = named('Keywords');
  return {
    flag_status: message.getIntItem(0x1090), last_verb: message.lastVerbExecuted,
    icon_index: message.getIntItem(0x1080),
    keywords: items && keywords > 0 ? multipleStrings(items.get(keywords)) : null,
    source_id: named('LegacyFloSourceId') > 0 ? message.getStringItem(named('LegacyFloSourceId')) : null,
    sha256: named('LegacyFloSha256') > 0 ? message.getStringItem(named('LegacyFloSha256')) : null,
    imap_flags: named('LegacyFloFlags') > 0 ? message.getStringItem(named('LegacyFloFlags')) : null,
  };
}

function describe(message) {
  const recipients = [];
  const recipientCount = message.numberOfRecipients;
  remember(message.recipientTable);
  for (let i = 0; i < recipientCount; i++) {
    const r = message.getRecipient(i);
    recipients.push({ type: r.recipientType, name: r.displayName, address: r.emailAddress });
  }
  const attachments = [];
  const attachmentCount = message.numberOfAttachments;
  remember(message.attachmentTable);
  for (let i = 0; i < attachmentCount; i++) attachments.push(attachment(message, i));
  return {
    subject: message.subject, message_class: message.messageClass,
    sender_name: message.senderName, sender_address: message.senderEmailAddress,
    sent: iso(message.clientSubmitTime), delivered: iso(message.messageDeliveryTime),
    message_id: message.internetMessageId, read: message.isRead,
    body: message.body, body_html: message.bodyHTML, recipients, attachments,
    metadata: archiveMetadata(message),
  };
}

function walk(folder, path, out) {
  const messages = [];
  for (let child = folder.getNextChild(); child; child = folder.getNextChild()) {
    messages.push(describe(child));
  }
  out.push({ path, content_count: folder.contentCount, messages });
  if (folder.hasSubfolders) {
    for (const sub of folder.getSubFolders()) walk(sub, path.concat([sub.displayName]), out);
  }
}

const pst = new PSTFile(process.argv[2]);
const folders = [];
walk(pst.getRootFolder(), [], folders);
process.stdout.write(JSON.stringify({ store: pst.getMessageStore().displayName, folders }));
pst.close();
