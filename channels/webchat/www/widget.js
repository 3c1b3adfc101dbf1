/* widget.js - the switchboard customer chat, embedded with one tag:
 *
 *   <script src="https://support.example.com/chat/widget.js"
 *           data-lang="ru" defer></script>
 *
 * It adds a chat button and a panel to the page, inside a shadow root so the
 * page's styles and ours never meet, and talks to the server over the
 * WebSocket next to this file (.../chat/ws, subprotocol
 * switchboard.chat.v1; channels/webchat/PROTOCOL.md). No framework, no
 * build step; the language comes from data-lang, else the page's
 * <html lang>, Russian or English.
 *
 * What it keeps in localStorage (under "sbchat."): the visitor token (the
 * server's name for this browser), messages written and not yet confirmed
 * (the outbox: sent again, with the same client id, after every reconnect,
 * so each is stored once), and the e-mail or phone the visitor left. It
 * reconnects with a growing, jittered delay after a drop and resumes the
 * same conversation; the history from the server replaces what is shown, so
 * nothing appears twice.
 *
 * Safe under a strict Content-Security-Policy: no inline script, no style
 * attributes; the styles are a constructed stylesheet adopted by the shadow
 * root (a <style> element only where that API is missing). Every text from
 * the network is inserted with textContent.
 */
(function () {
    'use strict';

    if (window.__sbChatLoaded) {
        return;
    }
    window.__sbChatLoaded = true;

    var PROTOCOL = 'switchboard.chat.v1';
    var KEY = 'sbchat.';
    var PING_MS = 30000;
    var TYPING_MS = 3000;
    var AGENT_TYPING_MS = 5000;
    var BACKOFF_MIN = 1000;
    var BACKOFF_MAX = 30000;
    var RETRY_MS = 3000;
    var MAX_CHARS = 1000;

    var STRINGS = {
        ru: {
            open: 'Открыть чат',
            close: 'Закрыть чат',
            button: 'Чат',
            title: 'Чат с менеджером',
            placeholder: 'Ваше сообщение…',
            message: 'Сообщение',
            send: 'Отправить',
            you: 'Вы',
            agent: 'Менеджер',
            system: 'Уведомление',
            connecting: 'Подключаемся…',
            offline: 'Нет связи. Сообщения отправятся, когда связь вернётся.',
            online: 'Напишите нам — мы ответим здесь.',
            queued: 'Ждём свободного менеджера.',
            position: 'Ждём свободного менеджера. Вы {n}-й в очереди.',
            assigned: 'Оператор {name} подключился',
            assignedAnon: 'Менеджер уже читает ваше сообщение.',
            resolved: 'Разговор завершён. Напишите, если нужна помощь.',
            typing: '{name} печатает…',
            sending: 'отправляется',
            failed: 'не отправлено',
            contactLabel: 'E-mail или телефон для ответа, если вы уйдёте',
            contactSave: 'Сохранить',
            contactSaved: 'Сохранено: {v}',
            contactBad: 'Проверьте адрес или номер.',
            tooLong: 'Сообщение слишком длинное.',
            unread: 'новых сообщений: {n}'
        },
        en: {
            open: 'Open chat',
            close: 'Close chat',
            button: 'Chat',
            title: 'Chat with us',
            placeholder: 'Your message…',
            message: 'Message',
            send: 'Send',
            you: 'You',
            agent: 'Manager',
            system: 'Notice',
            connecting: 'Connecting…',
            offline: 'Offline. Your messages will be sent when we are back.',
            online: 'Write to us, we answer here.',
            queued: 'Waiting for a free manager.',
            position: 'Waiting for a free manager. You are number {n}.',
            assigned: '{name} joined',
            assignedAnon: 'A manager is reading your message.',
            resolved: 'The conversation is closed. Write if you need help.',
            typing: '{name} is typing…',
            sending: 'sending',
            failed: 'not sent',
            contactLabel: 'E-mail or phone for a reply if you leave',
            contactSave: 'Save',
            contactSaved: 'Saved: {v}',
            contactBad: 'Please check the address or number.',
            tooLong: 'The message is too long.',
            unread: '{n} new messages'
        }
    };

    var CSS = [
        ':host { all: initial; }',
        '* { box-sizing: border-box; }',
        '.root { position: fixed; right: 20px; bottom: 20px;',
        '  z-index: 2147483000; font: 15px/1.4 system-ui, -apple-system,',
        '  "Segoe UI", Roboto, Arial, sans-serif; color: #1d2433; }',
        '.launcher { display: flex; align-items: center; gap: 8px;',
        '  margin-left: auto; border: 0; border-radius: 28px;',
        '  padding: 12px 20px; background: #1f5eff; color: #fff;',
        '  font: inherit; font-weight: 600; cursor: pointer;',
        '  box-shadow: 0 4px 16px rgba(0,0,0,.25); }',
        '.launcher:hover { background: #1a4fd6; }',
        '.launcher:focus-visible, button:focus-visible,',
        'textarea:focus-visible, input:focus-visible {',
        '  outline: 3px solid #ffb000;',
        '  outline-offset: 2px; }',
        '.badge { min-width: 22px; padding: 0 6px; border-radius: 11px;',
        '  background: #e5253a; color: #fff; font-size: 13px;',
        '  line-height: 22px; text-align: center; }',
        '.panel { display: flex; flex-direction: column; width: 360px;',
        '  max-width: calc(100vw - 40px); height: 520px;',
        '  max-height: calc(100vh - 100px); margin-bottom: 12px;',
        '  background: #fff; border-radius: 14px; overflow: hidden;',
        '  box-shadow: 0 8px 32px rgba(0,0,0,.3); }',
        '[hidden] { display: none !important; }',
        '.head { display: flex; align-items: flex-start; gap: 8px;',
        '  padding: 12px 14px; background: #1f5eff; color: #fff; }',
        '.head h2 { margin: 0; font-size: 16px; }',
        '.head .state { margin: 2px 0 0; font-size: 13px; opacity: .9; }',
        '.head .titles { flex: 1; }',
        '.x { border: 0; background: transparent; color: #fff;',
        '  font-size: 22px; line-height: 1; padding: 2px 6px;',
        '  cursor: pointer; border-radius: 6px; }',
        '.log { flex: 1; margin: 0; padding: 12px; list-style: none;',
        '  overflow-y: auto; background: #f4f6fa; }',
        '.msg { max-width: 85%; margin: 0 0 10px; padding: 8px 11px;',
        '  border-radius: 12px; background: #fff;',
        '  box-shadow: 0 1px 2px rgba(0,0,0,.08); }',
        '.msg.customer { margin-left: auto; background: #dbe6ff; }',
        '.msg.system { margin: 0 auto 10px; background: #fff6d6; }',
        '.msg .meta { display: block; font-size: 12px; color: #5b6477;',
        '  margin-bottom: 2px; }',
        '.msg .text { white-space: pre-wrap; overflow-wrap: anywhere; }',
        '.msg.pending .meta::after { content: " · " attr(data-note); }',
        '.msg.failed { outline: 2px solid #e5253a; }',
        '.typing { min-height: 20px; margin: 0; padding: 0 14px;',
        '  font-size: 13px; color: #5b6477; background: #f4f6fa; }',
        '.compose { display: flex; gap: 8px; padding: 10px;',
        '  border-top: 1px solid #e2e6ee; }',
        '.compose textarea { flex: 1; resize: none; height: 44px;',
        '  padding: 8px 10px; border: 1px solid #c5ccd9; border-radius: 8px;',
        '  font: inherit; }',
        '.compose button, .contact button { border: 0; border-radius: 8px;',
        '  padding: 0 14px; background: #1f5eff; color: #fff; font: inherit;',
        '  font-weight: 600; cursor: pointer; }',
        '.contact { display: flex; flex-wrap: wrap; gap: 6px;',
        '  padding: 8px 10px 0; font-size: 13px; }',
        '.contact label { width: 100%; color: #5b6477; }',
        '.contact input { flex: 1; min-width: 0; padding: 6px 8px;',
        '  border: 1px solid #c5ccd9; border-radius: 8px; font: inherit; }',
        '.contact button { padding: 6px 12px; }',
        '.contact .note { width: 100%; margin: 0; color: #5b6477; }',
        '.sr { position: absolute; width: 1px; height: 1px; overflow: hidden;',
        '  clip: rect(0 0 0 0); white-space: nowrap; }'
    ].join('\n');

    /* ---- where we are and who we are --------------------------------- */

    function findScript() {
        if (document.currentScript && document.currentScript.src) {
            return document.currentScript;
        }
        var all = document.getElementsByTagName('script');
        for (var i = all.length - 1; i >= 0; i--) {
            if (/\/chat\/widget\.js(\?|#|$)/.test(all[i].src)) {
                return all[i];
            }
        }
        return null;
    }

    var script = findScript();
    if (!script) {
        return;
    }
    var base = new URL('.', script.src);
    var wsUrl = (base.protocol === 'https:' ? 'wss:' : 'ws:') + '//' +
        base.host + base.pathname + 'ws';
    var langAttr = (script.getAttribute('data-lang') ||
                    document.documentElement.getAttribute('lang') || '')
        .toLowerCase();
    var lang = langAttr.indexOf('ru') === 0 ? 'ru' : 'en';
    var T = STRINGS[lang];

    function fmt(s, vars) {
        return s.replace(/\{(\w+)\}/g, function (m, k) {
            return vars && vars[k] !== undefined ? String(vars[k]) : m;
        });
    }

    var store = {
        get: function (k, dflt) {
            try {
                var v = window.localStorage.getItem(KEY + k);
                return v === null ? dflt : JSON.parse(v);
            } catch (e) {
                return dflt;
            }
        },
        set: function (k, v) {
            try {
                window.localStorage.setItem(KEY + k, JSON.stringify(v));
            } catch (e) {
                /* private mode or full: we just remember less */
            }
        }
    };

    function newId() {
        var b = new Uint8Array(12);
        window.crypto.getRandomValues(b);
        var s = 'c';
        for (var i = 0; i < b.length; i++) {
            s += (b[i] < 16 ? '0' : '') + b[i].toString(16);
        }
        return s;
    }

    function utf8Len(s) {
        return new TextEncoder().encode(s).length;
    }

    /* ---- the DOM ------------------------------------------------------- */

    function el(tag, cls, text) {
        var e = document.createElement(tag);
        if (cls) {
            e.className = cls;
        }
        if (text !== undefined) {
            e.textContent = text;
        }
        return e;
    }

    var host = el('div');
    host.id = 'switchboard-chat';
    var shadow = host.attachShadow({mode: 'open'});
    if ('adoptedStyleSheets' in shadow && window.CSSStyleSheet &&
        CSSStyleSheet.prototype.replaceSync) {
        var sheet = new CSSStyleSheet();
        sheet.replaceSync(CSS);
        shadow.adoptedStyleSheets = [sheet];
    } else {
        shadow.appendChild(el('style', null, CSS));
    }

    var root = el('div', 'root');
    var panel = el('section', 'panel');
    panel.id = 'sbchat-panel';
    panel.hidden = true;
    panel.setAttribute('role', 'dialog');
    panel.setAttribute('aria-labelledby', 'sbchat-title');

    var head = el('div', 'head');
    var titles = el('div', 'titles');
    var title = el('h2', null, T.title);
    title.id = 'sbchat-title';
    var stateLine = el('p', 'state', T.connecting);
    stateLine.setAttribute('role', 'status');
    titles.appendChild(title);
    titles.appendChild(stateLine);
    var closeBtn = el('button', 'x', '×');
    closeBtn.type = 'button';
    closeBtn.setAttribute('aria-label', T.close);
    head.appendChild(titles);
    head.appendChild(closeBtn);

    var log = el('ol', 'log');
    log.setAttribute('role', 'log');
    log.setAttribute('aria-live', 'polite');
    log.setAttribute('aria-label', T.title);
    log.tabIndex = 0;

    var typingLine = el('p', 'typing');
    typingLine.setAttribute('aria-live', 'polite');

    var contact = el('form', 'contact');
    var contactInput = el('input');
    contactInput.id = 'sbchat-contact';
    contactInput.type = 'text';
    contactInput.autocomplete = 'email';
    contactInput.maxLength = 254;
    var contactLabel = el('label', null, T.contactLabel);
    contactLabel.htmlFor = 'sbchat-contact';
    var contactBtn = el('button', null, T.contactSave);
    contactBtn.type = 'submit';
    var contactNote = el('p', 'note');
    contactNote.setAttribute('aria-live', 'polite');
    contact.appendChild(contactLabel);
    contact.appendChild(contactInput);
    contact.appendChild(contactBtn);
    contact.appendChild(contactNote);

    var compose = el('form', 'compose');
    var input = el('textarea');
    input.id = 'sbchat-input';
    input.setAttribute('aria-label', T.message);
    input.placeholder = T.placeholder;
    input.maxLength = MAX_CHARS;
    input.rows = 2;
    var sendBtn = el('button', null, T.send);
    sendBtn.type = 'submit';
    compose.appendChild(input);
    compose.appendChild(sendBtn);

    panel.appendChild(head);
    panel.appendChild(log);
    panel.appendChild(typingLine);
    panel.appendChild(contact);
    panel.appendChild(compose);

    var launcher = el('button', 'launcher');
    launcher.type = 'button';
    launcher.setAttribute('aria-controls', 'sbchat-panel');
    launcher.setAttribute('aria-expanded', 'false');
    launcher.setAttribute('aria-label', T.open);
    launcher.appendChild(el('span', null, T.button));
    var badge = el('span', 'badge');
    badge.hidden = true;
    launcher.appendChild(badge);

    root.appendChild(panel);
    root.appendChild(launcher);
    shadow.appendChild(root);

    /* ---- state ----------------------------------------------------------- */

    var ws = null;
    var welcomed = false;
    var backoff = BACKOFF_MIN;
    var reconnectTimer = null;
    var pingTimer = null;
    var retryTimer = null;
    var typingSentAt = 0;
    var agentTypingTimer = null;
    var unread = 0;
    var maxText = 3000;
    var lastAgentId = null;
    var agentName = '';
    var shown = {};          /* message key -> <li> */
    var outbox = store.get('outbox', []);
    var token = store.get('token', null);
    var profile = store.get('profile', null);

    if (!Array.isArray(outbox)) {
        outbox = [];
    }
    if (profile && typeof profile.value === 'string') {
        contactInput.value = profile.value;
        contactNote.textContent = fmt(T.contactSaved, {v: profile.value});
    }

    function saveOutbox() {
        store.set('outbox', outbox);
    }

    function setState(text) {
        stateLine.textContent = text;
    }

    function fmtTime(ms) {
        var d = new Date(typeof ms === 'number' ? ms : Date.now());
        return d.toLocaleTimeString(lang === 'ru' ? 'ru-RU' : 'en-GB',
                                    {hour: '2-digit', minute: '2-digit'});
    }

    function scrollDown() {
        log.scrollTop = log.scrollHeight;
    }

    /* One message in the log; key makes it unique (client id for the
     * visitor's own, server id otherwise). Returns the <li>. */
    function render(key, from, name, text, at) {
        var li = shown[key];
        if (!li) {
            li = el('li', 'msg ' + from);
            li.appendChild(el('span', 'meta'));
            li.appendChild(el('div', 'text'));
            shown[key] = li;
            log.appendChild(li);
        }
        var who = from === 'customer' ? T.you :
            from === 'system' ? T.system : (name || T.agent);
        li.firstChild.textContent = who + ' · ' + fmtTime(at);
        li.lastChild.textContent = text;
        scrollDown();
        return li;
    }

    function markPending(li, note) {
        li.classList.add('pending');
        li.firstChild.setAttribute('data-note', note);
    }

    function markDone(li) {
        li.classList.remove('pending');
        li.classList.remove('failed');
        li.firstChild.removeAttribute('data-note');
    }

    function clearLog() {
        while (log.firstChild) {
            log.removeChild(log.firstChild);
        }
        shown = {};
    }

    function bumpUnread() {
        if (!panel.hidden) {
            return;
        }
        unread++;
        badge.textContent = String(unread);
        badge.hidden = false;
        launcher.setAttribute('aria-label', T.open + ', ' +
                              fmt(T.unread, {n: unread}));
    }

    function hideTyping() {
        clearTimeout(agentTypingTimer);
        agentTypingTimer = null;
        typingLine.textContent = '';
    }

    /* The agent is typing: shown until a message comes or 5 s pass
     * without another typing frame. */
    function showTyping(m) {
        if (typeof m.name === 'string' && m.name) {
            agentName = m.name;
        }
        typingLine.textContent = fmt(T.typing, {name: agentName || T.agent});
        clearTimeout(agentTypingTimer);
        agentTypingTimer = setTimeout(hideTyping, AGENT_TYPING_MS);
    }

    /* The status line: place in the queue, who joined, or closed. Live
     * frames come whenever the routing changes (PROTOCOL.md). */
    function showStatus(m) {
        if (m.state === 'queued') {
            setState(typeof m.position === 'number' ?
                fmt(T.position, {n: m.position}) : T.queued);
        } else if (m.state === 'assigned') {
            if (typeof m.name === 'string' && m.name) {
                agentName = m.name;
            }
            setState(agentName ? fmt(T.assigned, {name: agentName}) :
                T.assignedAnon);
        } else if (m.state === 'resolved') {
            hideTyping();
            setState(T.resolved);
        }
    }

    /* ---- the connection ---------------------------------------------- */

    function send(obj) {
        if (ws && ws.readyState === 1) {
            ws.send(JSON.stringify(obj));
            return true;
        }
        return false;
    }

    function flushOutbox() {
        if (!welcomed) {
            return;
        }
        for (var i = 0; i < outbox.length; i++) {
            if (!outbox[i].failed) {
                send({type: 'message', id: outbox[i].id,
                      text: outbox[i].text});
            }
        }
    }

    function scheduleRetry() {
        if (retryTimer) {
            return;
        }
        retryTimer = setTimeout(function () {
            retryTimer = null;
            flushOutbox();
        }, RETRY_MS + Math.floor(Math.random() * 1000));
    }

    function sendHello() {
        var hello = {type: 'hello', lang: lang, page: location.href};
        if (typeof token === 'string') {
            hello.token = token;
        }
        if (profile && profile.kind && profile.value) {
            hello[profile.kind] = profile.value;
        }
        send(hello);
    }

    function onWelcome(m) {
        welcomed = true;
        backoff = BACKOFF_MIN;
        if (typeof m.max_text === 'number') {
            maxText = m.max_text;
        }
        if (typeof m.token === 'string') {
            token = m.token;
            store.set('token', token);
        }
        /* The server's history is the truth: show it, then what is still
         * ours to send (minus what the history shows as stored). */
        clearLog();
        var stored = {};
        var hist = Array.isArray(m.history) ? m.history : [];
        for (var i = 0; i < hist.length; i++) {
            var h = hist[i];
            var key = h.from === 'customer' && h.client_id ?
                'c:' + h.client_id : 's:' + h.id;
            if (h.client_id) {
                stored[h.client_id] = true;
            }
            render(key, h.from, h.name, h.text, h.at);
            if (h.from === 'agent') {
                lastAgentId = h.id;
                if (h.name) {
                    agentName = h.name;
                }
            }
        }
        outbox = outbox.filter(function (o) {
            return !stored[o.id];
        });
        saveOutbox();
        for (var j = 0; j < outbox.length; j++) {
            var li = render('c:' + outbox[j].id, 'customer', null,
                            outbox[j].text, outbox[j].at);
            markPending(li, T.sending);
        }
        setState(T.online);
        flushOutbox();
        sendRead();
    }

    function onAck(m) {
        outbox = outbox.filter(function (o) {
            return o.id !== m.id;
        });
        saveOutbox();
        var li = shown['c:' + m.id];
        if (li) {
            markDone(li);
        }
    }

    function onError(m) {
        if (!m.id) {
            if (m.field === 'email' || m.field === 'phone') {
                contactNote.textContent = T.contactBad;
            }
            if (m.code === 'unavailable' && !welcomed) {
                setTimeout(sendHello, RETRY_MS);
            }
            return;
        }
        var li = shown['c:' + m.id];
        if (m.code === 'unavailable') {
            scheduleRetry();
            return;
        }
        /* Refused for good (empty, too long, rejected): do not resend. */
        outbox = outbox.filter(function (o) {
            return o.id !== m.id;
        });
        saveOutbox();
        if (li) {
            li.classList.add('failed');
            markPending(li, m.code === 'too_long' ? T.tooLong : T.failed);
        }
    }

    function onMessage(m) {
        if (m.from === 'customer') {
            /* Written in another tab of this browser. */
            var li = render(m.client_id ? 'c:' + m.client_id : 's:' + m.id,
                            'customer', null, m.text, m.at);
            markDone(li);
            return;
        }
        if (m.name) {
            agentName = m.name;
        }
        render('s:' + m.id, m.from === 'system' ? 'system' : 'agent', m.name,
               m.text, m.at);
        hideTyping();
        if (m.from === 'agent') {
            lastAgentId = m.id;
            bumpUnread();
            sendRead();
        }
    }

    function onFrame(ev) {
        var m;
        try {
            m = JSON.parse(ev.data);
        } catch (e) {
            return;
        }
        if (!m || typeof m.type !== 'string') {
            return;
        }
        switch (m.type) {
        case 'welcome':
            onWelcome(m);
            break;
        case 'ack':
            onAck(m);
            break;
        case 'message':
            if (typeof m.text === 'string') {
                onMessage(m);
            }
            break;
        case 'typing':
            if (m.from === 'agent') {
                showTyping(m);
            }
            break;
        case 'status':
            showStatus(m);
            break;
        case 'profile':
            break;
        case 'error':
            onError(m);
            break;
        }
    }

    function connect() {
        if (ws || reconnectTimer) {
            return;
        }
        setState(T.connecting);
        try {
            ws = new WebSocket(wsUrl, PROTOCOL);
        } catch (e) {
            ws = null;
            scheduleReconnect();
            return;
        }
        welcomed = false;
        ws.onopen = function () {
            sendHello();
            clearInterval(pingTimer);
            pingTimer = setInterval(function () {
                send({type: 'ping'});
            }, PING_MS);
        };
        ws.onmessage = onFrame;
        ws.onclose = function () {
            ws = null;
            welcomed = false;
            clearInterval(pingTimer);
            setState(T.offline);
            scheduleReconnect();
        };
        ws.onerror = function () {
            /* onclose follows */
        };
    }

    function scheduleReconnect() {
        if (reconnectTimer) {
            return;
        }
        var delay = backoff / 2 + Math.random() * backoff / 2;
        backoff = Math.min(backoff * 2, BACKOFF_MAX);
        reconnectTimer = setTimeout(function () {
            reconnectTimer = null;
            connect();
        }, delay);
    }

    function sendRead() {
        if (!panel.hidden && lastAgentId && welcomed) {
            send({type: 'read', up_to: lastAgentId});
        }
    }

    /* ---- what the visitor does ----------------------------------------- */

    function openPanel() {
        panel.hidden = false;
        launcher.setAttribute('aria-expanded', 'true');
        launcher.setAttribute('aria-label', T.close);
        unread = 0;
        badge.hidden = true;
        connect();
        scrollDown();
        input.focus();
        sendRead();
    }

    function closePanel() {
        panel.hidden = true;
        launcher.setAttribute('aria-expanded', 'false');
        launcher.setAttribute('aria-label', T.open);
        launcher.focus();
    }

    launcher.addEventListener('click', function () {
        if (panel.hidden) {
            openPanel();
        } else {
            closePanel();
        }
    });
    closeBtn.addEventListener('click', closePanel);
    panel.addEventListener('keydown', function (e) {
        if (e.key === 'Escape') {
            e.preventDefault();
            closePanel();
        }
    });

    function submit() {
        var text = input.value.replace(/^\s+|\s+$/g, '');
        if (!text) {
            return;
        }
        if (utf8Len(text) > maxText) {
            typingLine.textContent = T.tooLong;
            return;
        }
        var item = {id: newId(), text: text, at: Date.now()};
        outbox.push(item);
        saveOutbox();
        input.value = '';
        var li = render('c:' + item.id, 'customer', null, text, item.at);
        markPending(li, T.sending);
        if (welcomed) {
            send({type: 'message', id: item.id, text: text});
        } else {
            connect();
        }
    }

    compose.addEventListener('submit', function (e) {
        e.preventDefault();
        submit();
        input.focus();
    });
    input.addEventListener('keydown', function (e) {
        if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
            e.preventDefault();
            submit();
        }
    });
    input.addEventListener('input', function () {
        var now = Date.now();
        if (welcomed && now - typingSentAt > TYPING_MS) {
            typingSentAt = now;
            send({type: 'typing'});
        }
    });
    contact.addEventListener('submit', function (e) {
        e.preventDefault();
        var v = contactInput.value.replace(/^\s+|\s+$/g, '');
        if (!v) {
            return;
        }
        var kind = v.indexOf('@') >= 0 ? 'email' : 'phone';
        profile = {kind: kind, value: v};
        store.set('profile', profile);
        contactNote.textContent = fmt(T.contactSaved, {v: v});
        var p = {type: 'profile'};
        p[kind] = v;
        send(p);
    });

    function mount() {
        document.body.appendChild(host);
        /* A returning visitor is connected at once, to get replies. */
        if (typeof token === 'string' || outbox.length) {
            connect();
        }
    }

    if (document.body) {
        mount();
    } else {
        document.addEventListener('DOMContentLoaded', mount);
    }
}());
