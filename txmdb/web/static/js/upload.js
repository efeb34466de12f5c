/* Upload forms: send the file to the API (the form's action) and show its answer in the page.
   The CSRF token travels in the form's csrf_token field; the API answers JSON. */
(function () {
  "use strict";

  function show(form, kind, text) {
    var box = form.querySelector(".result");
    if (!box) {
      box = document.createElement("div");
      form.appendChild(box);
    }
    box.className = "result " + kind;
    box.setAttribute("role", kind === "error" ? "alert" : "status");
    box.textContent = text;
  }

  function describe(body) {
    var parts = [];
    Object.keys(body).forEach(function (key) {
      var value = body[key];
      if (key !== "created" && value !== null && typeof value !== "object") { parts.push(key + " " + value); }
    });
    return parts.join(", ");
  }

  function submit(event) {
    var form = event.target;
    event.preventDefault();
    var button = form.querySelector("button[type=submit]");
    button.disabled = true;
    show(form, "muted", "Uploading…");
    fetch(form.action, { method: "POST", body: new FormData(form), credentials: "same-origin",
                         headers: { "Accept": "application/json" } })
      .then(function (response) {
        return response.json().then(function (body) { return { ok: response.ok, body: body }; },
                                    function () { return { ok: false, body: { error: "HTTP " + response.status } }; });
      })
      .then(function (answer) {
        if (answer.ok) {
          // The same file again is the same record, as on the command line: said so, nothing added.
          show(form, "success", (answer.body.created === false ? "Already in the catalogue (the same file): "
                                                              : "Stored: ") + describe(answer.body));
          form.reset();
        } else {
          show(form, "error", answer.body.error || answer.body.detail || "the upload failed");
        }
      }, function () { show(form, "error", "the server could not be reached"); })
      .then(function () { button.disabled = false; });
  }

  Array.prototype.forEach.call(document.querySelectorAll("form.upload"), function (form) {
    form.addEventListener("submit", submit);
  });
})();
