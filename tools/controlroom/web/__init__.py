"""The officers' web console (`pinkbutton-controlroom serve`, issue 12).

`accounts` (officers, sessions, audit log), `views` (store rows -> what a page shows),
`app` (the Starlette application: pages, actions, the WebSocket), `serve` (the receiver plus
the console behind HTTPS). Needs the `room` extra (starlette, uvicorn, jinja2, ...); the
receiver never imports this package.
"""
