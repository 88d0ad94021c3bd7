// Starts GraphiQL against this recall's own POST /graphql. A file rather than an inline script, so that
// the page's Content-Security-Policy can forbid inline scripts. It must never load from another origin.
(function () {
  'use strict';

  var wsScheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
  var fetcher = GraphiQL.createFetcher({
    url: '/graphql',
    // Subscriptions will be served over WebSocket at /graphql/ws (graphql-ws, bundled in GraphiQL). The
    // client connects lazily, only when a subscription is run, so nothing is opened before they exist.
    subscriptionUrl: wsScheme + '//' + window.location.host + '/graphql/ws',
    // Sign-in will use an HTTP-only cookie: send it with every query.
    fetch: function (input, init) {
      return window.fetch(input, Object.assign({}, init, { credentials: 'same-origin' }));
    },
  });

  ReactDOM.createRoot(document.getElementById('graphiql')).render(
    React.createElement(GraphiQL, { fetcher: fetcher, defaultEditorToolsVisibility: true })
  );
})();
