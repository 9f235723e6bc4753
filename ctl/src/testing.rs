//! An in-process fake `AdminService` for command tests: records every
//! request and answers with canned data, or with a given error.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpool_proto::v1::admin_service_server::{AdminService, AdminServiceServer};
use rpool_proto::v1::*;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use crate::client::{self, Controller as Client};

/// A request the fake received.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    Status,
    ListControllers,
    Add(AddControllerRequest),
    Remove(RemoveControllerRequest),
    Transfer(TransferLeaderRequest),
    SetLabels(SetHostLabelsRequest),
    Other(&'static str),
}

#[derive(Clone, Default)]
pub struct Fake {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Answer every request with this error instead.
    pub fail: Option<Status>,
    pub controllers: Vec<Controller>,
    pub host: Host,
}

impl Fake {
    fn answer<T>(&self, seen: Seen, ok: T) -> Result<Response<T>, Status> {
        self.seen.lock().unwrap().push(seen);
        match &self.fail {
            Some(status) => Err(status.clone()),
            None => Ok(Response::new(ok)),
        }
    }

    fn list(&self) -> ListControllersResponse {
        ListControllersResponse {
            controllers: self.controllers.clone(),
            leader_id: 1,
        }
    }

    /// Serves on a free loopback port; returns a connected client.
    pub async fn serve(self) -> Client {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(AdminServiceServer::new(self))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        client::connect(&[address], Duration::from_secs(5)).await.unwrap()
    }
}

#[tonic::async_trait]
impl AdminService for Fake {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        self.answer(Seen::Status, StatusResponse::default())
    }
    async fn list_hosts(&self, _: Request<ListHostsRequest>) -> Result<Response<ListHostsResponse>, Status> {
        self.answer(Seen::Other("ListHosts"), ListHostsResponse::default())
    }
    async fn get_host(&self, _: Request<GetHostRequest>) -> Result<Response<Host>, Status> {
        self.answer(Seen::Other("GetHost"), self.host.clone())
    }
    async fn set_host_labels(&self, r: Request<SetHostLabelsRequest>) -> Result<Response<Host>, Status> {
        self.answer(Seen::SetLabels(r.into_inner()), self.host.clone())
    }
    async fn list_controllers(
        &self,
        _: Request<ListControllersRequest>,
    ) -> Result<Response<ListControllersResponse>, Status> {
        self.answer(Seen::ListControllers, self.list())
    }
    async fn add_controller(
        &self,
        r: Request<AddControllerRequest>,
    ) -> Result<Response<ListControllersResponse>, Status> {
        self.answer(Seen::Add(r.into_inner()), self.list())
    }
    async fn remove_controller(
        &self,
        r: Request<RemoveControllerRequest>,
    ) -> Result<Response<ListControllersResponse>, Status> {
        self.answer(Seen::Remove(r.into_inner()), self.list())
    }
    async fn transfer_leader(
        &self,
        r: Request<TransferLeaderRequest>,
    ) -> Result<Response<ListControllersResponse>, Status> {
        self.answer(Seen::Transfer(r.into_inner()), self.list())
    }
}
